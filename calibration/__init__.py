"""Representative-data sampling for quantization, shared by every backend: a class-balanced,
seeded sample of the training split, or a seeded sample of a folder of unlabelled images."""

from edgekiln.calibration.folder import folder_fingerprint, folder_sample, image_files
from edgekiln.calibration.sampling import balanced_sample

__all__ = ["balanced_sample", "folder_fingerprint", "folder_sample", "image_files"]
