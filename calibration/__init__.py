"""Representative-data sampling for quantization, shared by every backend."""

from edgekiln.calibration.sampling import balanced_sample

__all__ = ["balanced_sample"]
