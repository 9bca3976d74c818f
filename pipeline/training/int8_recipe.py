"""The INT8 recipe a quantizing stage hands to the stage that builds artifacts: its
calibration sample and the options every artifact is built with (QAT's fake-quantize state,
the layers kept in float to hold the budget). Stored as files beside the stage's result."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from edgekiln.data.dataset import to_input
from edgekiln.targets.int8 import Int8Options
from edgekiln.training.modeling import ModelBundle

CALIBRATION_FILE = "calibration.npy"  # uint8 NCHW images, beside the stage's result
QAT_STATE_FILE = "qat_state.safetensors"  # QAT's fake-quantize state (QAT only)


def int8_options(result, options: Int8Options) -> Int8Options:
    """`options` (the config's) with QAT's state if the stage left one, and the layers it kept
    in float to hold its budget. `result`: the quantizing stage's StageResult."""
    state = result.directory / QAT_STATE_FILE
    mixed = result.figures.mixed_precision
    # the ladder's calibration rung may have chosen another calibrator than the config's
    calibrator = result.figures.calibrator_chosen or options.calibrator
    return dataclasses.replace(options, qat_state=str(state) if state.is_file() else None, calibrator=calibrator,
                               float_layers=tuple(mixed.float_layers) if mixed and mixed.applied else ())


def calibration_images(result, bundle: ModelBundle) -> np.ndarray:
    """The stage's calibration sample as preprocessed float32 NCHW numpy, for every backend."""
    images = torch.from_numpy(np.load(result.directory / CALIBRATION_FILE, allow_pickle=False))
    return to_input(images, bundle.mean, bundle.std, bundle.input_size).numpy()
