"""Accuracy-aware quantization: an artifact whose plain INT8 misses the accuracy budget gets
its most sensitive layers kept in float until the budget holds, and says which."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from edgekiln.data.dataset import DataConfig, load_dataset
from edgekiln.engine.config import BudgetConfig
from edgekiln.gates import checks
from edgekiln.stages.export import work as export
from edgekiln.stages.quantize import QuantizeConfig
from edgekiln.stages.result import StageResult
from edgekiln.targets.int8 import quantizable_layers
from edgekiln.targets.target import TargetConfig
from edgekiln.training import evaluation, trainer
from edgekiln.training.int8_recipe import CALIBRATION_FILE
from edgekiln.training.modeling import ModelBundle
from edgekiln.stages.export import ExportSections
from edgekiln.stages.quantize.records import QuantizeRecord

# Wide enough that coremltools quantizes conv1 (it leaves tensors under 2048 weights in float16).
WIDTH = 96


class SmallNet(nn.Module):
    def __init__(self, classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, WIDTH, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(WIDTH, 16, 3, stride=2, padding=1)
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.head(x.mean((2, 3)))


def with_outlier_channel(model: SmallNet) -> SmallNet:
    """The same function with one extra conv1 channel of huge weights that conv2 ignores:
    float logits do not change, but one INT8 scale per tensor (weights and activations)
    can no longer represent conv1's real channels."""
    conv1 = nn.Conv2d(3, WIDTH + 1, 3, stride=2, padding=1)
    conv2 = nn.Conv2d(WIDTH + 1, 16, 3, stride=2, padding=1)
    with torch.no_grad():
        conv1.weight[:WIDTH], conv1.bias[:WIDTH] = model.conv1.weight, model.conv1.bias
        conv1.weight[WIDTH], conv1.bias[WIDTH] = 500.0, 0.0
        conv2.weight.zero_()
        conv2.weight[:, :WIDTH], conv2.bias[:] = model.conv2.weight, model.conv2.bias
    model.conv1, model.conv2 = conv1, conv2
    return model


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    data = load_dataset(DataConfig(image_size=16, seed=0))
    torch.manual_seed(0)
    bundle = ModelBundle("smallnet", SmallNet(data.num_classes), data.num_classes, 16, source="test")
    trainer.fit(bundle, data, 8, lr=1e-2, seed=0, desc="smallnet")
    float_accuracy = evaluation.evaluate(bundle, data)
    with_outlier_channel(bundle.model)
    assert evaluation.evaluate(bundle, data) == pytest.approx(float_accuracy)  # the surgery keeps the function
    directory = tmp_path_factory.mktemp("quantize")
    np.save(directory / CALIBRATION_FILE, data.train_x[:64].numpy())
    quantized = StageResult.with_model(float_accuracy, bundle, directory=directory, params=0, macs=0,
                                       stage="quantize", figures=QuantizeRecord())
    return data, quantized, float_accuracy


def export_once(data, quantized, accuracy_aware, workdir, targets, sensitive_layers="float", more=()):
    config = ExportSections(targets=[TargetConfig(name=fmt, format=fmt) for fmt in targets] + list(more),
              quantize=QuantizeConfig(per_channel=False, accuracy_aware=accuracy_aware,
                                      sensitive_layers=sensitive_layers),
              budget=BudgetConfig(max_drop_total=100.0, max_drop={"export": 5.0}))
    teacher = StageResult(accuracy=quantized.accuracy, stage="teacher")
    workdir.mkdir()
    return [a.to_dict() for a in export.run(data, config, workdir, previous=quantized, reference=teacher).artifacts]


def test_plain_int8_misses_the_budget_and_mixed_precision_recovers_it_listing_the_float_layers(trained, tmp_path):
    data, quantized, float_accuracy = trained
    budget = BudgetConfig(max_drop_total=100.0, max_drop={"export": 5.0})

    def gates(artifact):
        return checks(f"target {artifact['target']}", artifact["accuracy"], ("quantize", float_accuracy),
                      budget.max_drop.export, "budget.max_drop.export", float_accuracy, budget.max_drop_total)

    [plain] = export_once(data, quantized, False, tmp_path / "plain", ["onnx"])
    assert "mixed_precision" not in plain and plain["quantization"]["float_layers"] == []
    assert not all(g.passed for g in gates(plain)), plain["accuracy"]

    onnx, tflite = export_once(data, quantized, True, tmp_path / "aware", ["onnx", "tflite"])
    for artifact in (onnx, tflite):
        mixed = artifact["mixed_precision"]
        assert mixed["applied"] and mixed["held"]
        assert artifact["int8_accuracy"] < float_accuracy - 5.0
        assert all(g.passed for g in gates(artifact)), (artifact["target"], artifact["accuracy"], mixed["steps"])
        # The layers are named, kept in float in the artifact, and fewer than all of them.
        assert 1 <= len(mixed["float_layers"]) < len(quantizable_layers(quantized.bundle.model))
        assert artifact["quantization"]["float_layers"] == mixed["float_layers"]
        search = [s for s in mixed["steps"] if s["layer"] is not None]
        assert [s["float_layers"] for s in search] == list(range(1, len(mixed["float_layers"]) + 1))
        assert search[-1]["breach"] is None and all(s["breach"] for s in search[:-1])
        assert {r["layer"] for r in mixed["ranking"]} == set(quantizable_layers(quantized.bundle.model))
    assert "conv1" in onnx["mixed_precision"]["float_layers"]
    assert onnx["mixed_precision"]["steps"][-1]["accuracy_source"] == "runtime"
    # TFLite's steps are simulated; the simulation's choice is then measured in ai-edge-litert
    *simulated, checked = tflite["mixed_precision"]["steps"]
    assert {s["accuracy_source"] for s in simulated} == {"torch simulation"}
    assert checked["accuracy_source"] == "runtime" and checked["breach"] is None
    assert checked["float_layers"] == len(tflite["mixed_precision"]["float_layers"])
    assert tflite["accuracy_source"] == "runtime" and tflite["accuracy"] == checked["accuracy"]


def test_int16_sensitive_layers_keep_the_tflite_artifact_integer_only_and_within_budget(trained, tmp_path):
    """sensitive_layers = "int16": the layers the search keeps from plain INT8 get int16
    activations instead of float, so the TFLite artifact has no float op but the interface's;
    ONNX, which cannot here, keeps them float and says so."""
    from ai_edge_litert.interpreter import Interpreter

    data, quantized, float_accuracy = trained
    budget = BudgetConfig(max_drop_total=100.0, max_drop={"export": 5.0})
    phone = TargetConfig(name="phone", format="tflite", profile="pixel-3-cpu", allow_estimate=True)
    onnx, tflite = export_once(data, quantized, True, tmp_path / "int16", ["onnx"], "int16", more=[phone])
    mixed = tflite["mixed_precision"]
    assert mixed["applied"] and mixed["held"] and tflite["accuracy_source"] == "runtime"
    assert tflite["quantization"]["int16_layers"] == mixed["float_layers"] and tflite["quantization"]["float_layers"] == []
    assert all(g.passed for g in checks("target phone", tflite["accuracy"], ("quantize", float_accuracy),
                                        budget.max_drop.export, "budget.max_drop.export", float_accuracy,
                                        budget.max_drop_total))
    model = Interpreter(model_path=str(tmp_path / "int16" / tflite["file"]))
    tensors = model.get_tensor_details()
    wide = [t["name"] for t in tensors if t["dtype"] == np.int16]
    assert wide and all(any(f"_{layer}" in name for layer in mixed["float_layers"]) or "quantize" in name.lower()
                        for name in wide), wide
    weights = [t for t in tensors if len(t["shape"]) == 4 and t["shape"][0] in (WIDTH + 1, 16)]
    assert weights and all(t["dtype"] == np.int8 for t in weights), [(t["name"], t["dtype"]) for t in weights]
    assert onnx["quantization"]["sensitive_layers"].startswith("kept in float: onnx cannot")
    # A phone's estimate knows whole-model precisions only: it decides no latency budget here,
    # and no whole-INT8 row bounds it; `bench` and `check` read that back from the artifact.
    assert tflite["latency_source"] == "estimate" and "int16 layers" in tflite["latency_detail"]["order_of_magnitude"]
    assert tflite["latency_detail"]["bounds"] is None
    from edgekiln.release.verify import bench_artifact
    from edgekiln.targets import get_format
    path = tmp_path / "int16" / tflite["file"]
    assert json.loads(get_format("tflite").read_metadata(path)["edgekiln_other_layers"]) == {
        "int16": len(mixed["float_layers"])}
    benched = bench_artifact(path, "pixel-3-cpu", allow_estimate=True)
    assert benched.measurement["extra"]["bounds"] is None
    assert "int16 layers" in benched.measurement["extra"]["order_of_magnitude"]
    assert not [b for b in benched.budgets if b.field in ("p50_ms", "p90_ms")] and benched.budgets_not_checked
    assert onnx["quantization"]["float_layers"] == onnx["mixed_precision"]["float_layers"]


def test_when_the_runtime_disagrees_with_the_simulation_the_search_goes_on_in_the_runtime(
        trained, tmp_path, monkeypatch):
    data, quantized, _ = trained
    # A simulation that says any layer in float is enough, and a ranking whose first layers
    # leave the outlier conv1 quantized: ai-edge-litert must disagree until conv1 is float.
    monkeypatch.setattr(export._AccuracyAware, "simulated_accuracy", lambda self, options, x, y: 100.0)
    monkeypatch.setattr(export.mixed_precision, "rank_layers", lambda model, calibration, options, scheme: [
        {"layer": layer, "logit_mse": 1.0} for layer in ("head", "conv2", "conv1")])
    [tflite] = export_once(data, quantized, True, tmp_path / "disagree", ["tflite"])
    mixed = tflite["mixed_precision"]
    assert mixed["held"] and mixed["float_layers"][-1] == "conv1"
    assert "the search went on there" in mixed["outcome"]
    simulated, checked, *in_runtime = mixed["steps"]
    assert simulated["accuracy_source"] == "torch simulation" and simulated["layer"] == "head"
    assert checked["accuracy_source"] == "runtime" and checked["breach"] is not None
    assert [s["accuracy_source"] for s in in_runtime] == ["runtime"] * len(in_runtime)
    assert in_runtime[-1]["layer"] == "conv1" and in_runtime[-1]["breach"] is None
    assert tflite["accuracy"] == in_runtime[-1]["accuracy"]


def test_a_format_that_cannot_mix_precisions_says_so(trained, tmp_path):
    data, quantized, _ = trained
    [coreml] = export_once(data, quantized, True, tmp_path / "coreml", ["coreml"])
    # Per-tensor INT8 weights break conv1 in Core ML too, and it keeps no layer in float.
    mixed = coreml["mixed_precision"]
    assert mixed["applied"] is False and "cannot keep layers in float" in mixed["why_not"]
    assert coreml["accuracy"] == coreml["int8_accuracy"] < quantized.accuracy - 5.0


def test_a_budget_that_even_the_float_model_misses_is_not_searched(trained, tmp_path):
    data, quantized, float_accuracy = trained
    # The reference (the quantize stage's INT8 simulation) above float by more than the budget:
    # no layer kept in float can help, so no artifact is converted for nothing.
    lucky = StageResult.with_model(float_accuracy + 6.0, quantized.bundle, directory=quantized.directory,
                                   figures=quantized.figures)
    [onnx] = export_once(data, lucky, True, tmp_path / "ceiling", ["onnx"])
    mixed = onnx["mixed_precision"]
    assert mixed["applied"] is False and "steps" not in mixed
    assert f"the float model itself scores {float_accuracy:.2f}%" in mixed["why_not"]
    assert onnx["accuracy"] == onnx["int8_accuracy"] and onnx["quantization"]["float_layers"] == []


def test_when_no_step_meets_the_budget_the_most_accurate_measured_one_ships(trained, tmp_path, monkeypatch):
    data, quantized, _ = trained
    # A ranking that never reaches the outlier conv1: no step can meet the budget.
    monkeypatch.setattr(export.mixed_precision, "rank_layers", lambda model, calibration, options, scheme: [
        {"layer": layer, "logit_mse": 1.0} for layer in ("head", "conv2")])
    [onnx] = export_once(data, quantized, True, tmp_path / "never", ["onnx"])
    mixed = onnx["mixed_precision"]
    assert mixed["applied"] and not mixed["held"] and "ships the most accurate measured" in mixed["outcome"]
    best = max([(s["accuracy"], -s["float_layers"]) for s in mixed["steps"]] + [(onnx["int8_accuracy"], 0)])
    assert onnx["accuracy"] == best[0]  # scored on the shipped file, rebuilt if it was not the last step
    assert onnx["quantization"]["float_layers"] == mixed["float_layers"] == ["head", "conv2"][: -best[1]]
