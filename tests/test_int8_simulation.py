"""The INT8 simulation the quantize stage decides on comes from a format (its INT8_SIMULATION):
a format with another INT8 scheme plugs in without editing a stage. Here, one registered from
this file whose "INT8" is the float model itself (this module is its simulation)."""

import numpy as np
import pytest
import torch

from edgekiln.data.config import DataConfig
from edgekiln.data.dataset import load_dataset
from edgekiln.engine.config import BudgetConfig
from edgekiln.stages.quantize import QuantizeConfig
from edgekiln.stages.quantize import work as quantize
from edgekiln.stages.result import StageResult
from edgekiln.targets import format as formats
from edgekiln.training import evaluation, modeling
from edgekiln.stages.quantize import QuantizeSections

SCHEME = "identity: float, for the test"
simulated = []


def export_dynamic_batch(model, example):
    return model.eval()


def simulate(model, calibration, options, *, only=None, graph=None):
    simulated.append(len(calibration))
    return model.eval()


def predict(graph, images):
    with torch.no_grad():
        return graph(torch.from_numpy(images)).numpy()


def calibrator_used(options) -> str:
    return "none (identity)"


class IdentityFormat(formats.Format):
    NAME = "identity-test"
    SUFFIX = ".identity"
    ENCODINGS = {"int8": "int8"}
    INT8_SIMULATION = __name__


@pytest.fixture
def identity_format():
    formats.register_format(IdentityFormat)
    try:
        yield IdentityFormat
    finally:
        formats._REGISTRY.pop(IdentityFormat.NAME)


def test_the_quantize_stage_decides_on_the_simulation_its_config_names(identity_format, tmp_path):
    assert "identity-test" in formats.simulating_formats() and "tflite" in formats.simulating_formats()
    data = load_dataset(DataConfig(image_size=32, seed=0, max_samples=300))
    bundle = modeling.bundle("mobilenetv3_small_050", modeling.create("mobilenetv3_small_050", data.num_classes,
                                                                      seed=0), data.num_classes, 32)
    float_accuracy = evaluation.evaluate(bundle, data)
    previous = StageResult.with_model(float_accuracy, bundle, macs=1, stage="prune")
    reference = StageResult(accuracy=float_accuracy, stage="teacher")
    cfg = QuantizeConfig(simulation="identity-test", calibration_samples=16)
    result = quantize.run(data, QuantizeSections(quantize=cfg, budget=BudgetConfig(max_drop_total=100.0)), tmp_path,
                          previous=previous, reference=reference)
    assert simulated == [16]  # the stage simulated INT8 through this module, on its calibration sample
    assert result.figures.scheme == SCHEME and result.figures.simulation == "identity-test"
    assert result.figures.simulation_calibrator == "none (identity)"
    assert result.accuracy == pytest.approx(float_accuracy)  # the identity "INT8" loses nothing
    [graded] = result.grader(data.val_x, data.val_y)
    assert np.isclose(graded.accuracy, float_accuracy)


def test_a_simulation_no_format_provides_is_refused_naming_the_known_ones():
    with pytest.raises(ValueError, match="'onnx' is not a format with an INT8 simulation; known: tflite"):
        QuantizeConfig(simulation="onnx")
