"""Representative-data sampling for quantization, shared by every backend: a class-balanced,
seeded sample of the training split, or a seeded sample of a folder of unlabelled images.

The names below are imported on first use: `edgekiln.calibration.images` (the image
suffixes, read by `validate`) must stay importable without torch."""

import importlib

_LAZY = {"balanced_sample": "edgekiln.calibration.sampling", "folder_fingerprint": "edgekiln.calibration.folder",
         "folder_sample": "edgekiln.calibration.folder", "image_files": "edgekiln.calibration.folder"}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
