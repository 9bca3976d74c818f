"""edgekiln: image classifier -> distilled, pruned, INT8 mobile artifacts, gated on accuracy.

Kept light on purpose: every `edgekiln.*` import runs this file first.
"""

__version__ = "0.1.0"
