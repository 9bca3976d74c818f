"""Artifact formats: export, load-and-predict and host benchmark, one module per format.

`get_format(name)` is the one place a format name is resolved (like timm's
registry), so stages and the config schema never hard-code module paths.
"""

from __future__ import annotations

import importlib
from types import ModuleType

FORMATS = ("onnx", "tflite", "coreml")


def get_format(name: str) -> ModuleType:
    """Return the module implementing artifact format `name` (onnx, tflite or coreml)."""
    if name not in FORMATS:
        raise KeyError(f"unknown artifact format {name!r}; known: {', '.join(FORMATS)}")
    # Imported lazily: each format drags in its converter stack (seconds each).
    return importlib.import_module(f"edgekiln.targets.{name}_format")
