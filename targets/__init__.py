"""Artifact formats (one file each under formats/, see format.py), latency profiles and runners.

`get_format(name)` is the one place a format name is resolved (like timm's registry), so
stages and the config schema never hard-code module paths.
"""

from edgekiln.targets.format import format_names, get_format

__all__ = ["format_names", "get_format"]
