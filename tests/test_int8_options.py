"""[quantize] calibrator and per_channel reach each backend, and what each applied is recorded."""

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from edgekiln.targets import get_format
from edgekiln.targets.formats import onnx as onnx_module
from edgekiln.targets.formats.tflite import pt2e

onnx_format = get_format("onnx")
from edgekiln.targets.int8 import Int8Options
from edgekiln.stages.quantize import QuantizeSections
from edgekiln.stages.quantize.records import QuantizeRecord


def small_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()


def weight_scale_shapes(path) -> list[tuple]:
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    shapes = []
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits and inits[node.input[0]].ndim == 4:
            shapes.append(inits[node.input[1]].shape)  # the scale of a conv weight
    return shapes


@pytest.mark.parametrize("calibrator", ["minmax", "entropy", "percentile"])
@pytest.mark.parametrize("per_channel", [True, False])
def test_onnx_applies_the_calibrator_and_weight_granularity(tmp_path, calibrator, per_channel):
    calibration = np.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(np.float32)
    path = tmp_path / "m.onnx"
    applied = onnx_format.export_int8(small_model(), torch.randn(1, 3, 8, 8), calibration, path, {},
                                      Int8Options(calibrator=calibrator, per_channel=per_channel))
    assert applied == {"calibrator": calibrator, "per_channel": per_channel, "float_layers": [], "float_nodes": 0,
                       "calibration_images": 16, "weights": "U8U8"}
    shapes = weight_scale_shapes(path)
    assert len(shapes) == 2
    assert all(s == ((8,) if per_channel else ()) for s in shapes), shapes
    assert onnx_format.predict(path, calibration[:2]).shape == (2, 4)


def test_onnx_keeps_the_named_layers_float(tmp_path):
    calibration = np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32)
    path = tmp_path / "m.onnx"
    applied = onnx_format.export_int8(small_model(), torch.randn(1, 3, 8, 8), calibration, path, {},
                                      Int8Options(float_layers=("2",)))  # the second conv
    assert applied["float_nodes"] >= 1
    convs = [n for n in onnx.load(str(path)).graph.node if n.op_type == "Conv"]
    model = onnx.load(str(path))
    float_weights = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) == 4}
    assert [onnx_module.module_of(n.name) for n in convs if n.input[1] in float_weights] == ["2"]


def test_onnx_node_scopes_map_to_module_paths():
    assert onnx_module.module_of("/blocks/blocks.0/blocks.0.0/conv_dw/Conv") == "blocks.0.0.conv_dw"
    assert onnx_module.module_of("/conv_stem/Conv") == "conv_stem"
    assert onnx_module.module_of("/classifier/Gemm") == "classifier"


def test_the_pt2e_observer_follows_the_calibrator_and_says_so():
    minmax = pt2e.quantizer(Int8Options(calibrator="minmax")).global_config.input_activation
    entropy = pt2e.quantizer(Int8Options(calibrator="entropy")).global_config.input_activation
    assert "MinMaxObserver" in repr(minmax.observer_or_fake_quant_ctr)
    assert "HistogramObserver" in repr(entropy.observer_or_fake_quant_ctr)
    assert pt2e.calibrator_used(Int8Options(calibrator="percentile")) == "histogram (L2 error)"
    per_tensor = pt2e.quantizer(Int8Options(per_channel=False)).global_config.weight
    assert per_tensor.qscheme == torch.per_tensor_symmetric


def test_an_unknown_calibrator_is_refused():
    with pytest.raises(ValueError, match="unknown calibrator 'kl'"):
        Int8Options(calibrator="kl")


@pytest.mark.parametrize("weight_type, reduce_range, dtype, bound", [
    ("int8", False, np.int8, 127), ("int8", True, np.int8, 64), ("uint8", False, np.uint8, 255)])
def test_onnx_stores_the_weight_type_and_range_asked_for(tmp_path, weight_type, reduce_range, dtype, bound):
    calibration = np.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(np.float32)
    path = tmp_path / "m.onnx"
    applied = onnx_format.export_int8(small_model(), torch.randn(1, 3, 8, 8), calibration, path, {},
                                      Int8Options(weight_type=weight_type, reduce_range=reduce_range))
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    weights = [inits[n.input[0]] for n in onnx.load(str(path)).graph.node
               if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].ndim == 4]
    assert weights and all(w.dtype == dtype for w in weights)
    assert max(int(np.abs(w.astype(np.int32) - (128 if dtype == np.uint8 else 0)).max()) for w in weights) <= bound
    assert applied["weights"].startswith("U8S8" if weight_type == "int8" else "U8U8")
    assert ("reduce_range" in applied["weights"]) == reduce_range


def _profile(kind="host", **int8):
    from edgekiln.targets.profiles import Profile

    return Profile.model_validate({"name": "p", "device": "a device", "format": "onnx", "runner": {"kind": kind},
                                   "int8": int8})


@pytest.mark.parametrize("flags, reduce_range, says", [
    ({"avx2", "avx512f", "avx512_vnni"}, False, "AVX-512 VNNI"),
    ({"avx2", "avx_vnni"}, False, "AVX-VNNI"),
    ({"avx2"}, True, "no VNNI"),
    (set(), False, "non-x86 host"),
])
def test_onnx_int8_weights_follow_the_hosts_instruction_sets(monkeypatch, flags, reduce_range, says):
    from edgekiln.targets.runners import host

    monkeypatch.setattr(host, "_cpuinfo", lambda: ("a CPU", flags))
    weight_type, rr, why = onnx_module.int8_types(_profile())
    assert (weight_type, rr) == ("int8", reduce_range) and says in why


def test_a_profiles_int8_section_overrides_the_choice_and_only_onnx_reads_it():
    from pydantic import ValidationError

    from edgekiln.targets.profiles import Profile

    assert onnx_module.int8_types(_profile("adb"))[:2] == ("int8", False)  # a phone: ARM dot products
    weight_type, reduce_range, why = onnx_module.int8_types(_profile("ssh", weight_type="uint8", reduce_range=True))
    assert (weight_type, reduce_range) == ("uint8", True) and "weight_type = 'uint8'" in why
    options, record = onnx_format.for_profile(Int8Options(calibrator="entropy"), _profile("adb", reduce_range=True))
    assert (options.weight_type, options.reduce_range, options.calibrator) == ("int8", True, "entropy")
    assert record["reduce_range"] is True
    with pytest.raises(ValidationError, match="tflite artifacts do not read \\[int8\\]; only onnx does"):
        Profile.model_validate({"name": "p", "device": "d", "format": "tflite", "runner": {"kind": "host"},
                                "int8": {"weight_type": "int8"}})
    assert get_format("tflite").for_profile(Int8Options(), _profile())[1] == {}


def test_per_layer_sqnr_finds_the_layer_int8_hurts_and_ranks_it_first():
    """Two convolutions alike but for one output channel of the second, 1000x the others: the
    output's per-tensor scale crushes every other channel to a few levels (the unbalanced
    channel ranges cross-layer equalization exists for). Its total energy survives; its
    per-channel SQNR does not, and ranks it first."""
    import numpy as np
    import torch

    from edgekiln.stages.quantize.sensitivity import layer_sqnr

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3),
                                torch.nn.Flatten(), torch.nn.LazyLinear(4))
    calibration = np.random.default_rng(0).standard_normal((16, 3, 12, 12)).astype(np.float32)
    model(torch.from_numpy(calibration))  # materialize the lazy layer
    with torch.no_grad():
        model[2].weight[0] *= 1000
    per_tensor = layer_sqnr(model, calibration, per_channel=False, float_layers=("2",))
    assert [r["layer"] for r in per_tensor][0] == "2" and per_tensor[0]["in_float"]
    assert per_tensor[0]["sqnr_db"] < per_tensor[-1]["sqnr_db"] - 10
    assert per_tensor[0]["worst_channel_db"] < 10 and per_tensor[0]["sqnr_db"] < 20
    assert all(r["sqnr_db"] > 20 for r in layer_sqnr(model[:2], calibration))  # a plain conv quantizes well


def test_the_ladder_climbs_cheapest_first_and_stops_at_the_first_rung_within_budget(monkeypatch):
    """Plain min-max PTQ misses the budget on val; the histogram calibrator is tried next and
    holds, so no layer is kept in float; the manifest's ladder says so, rung by rung. With
    `ladder = false` only the float layers are tried, as before the ladder."""
    from edgekiln.stages.quantize import QuantizeConfig
    from edgekiln.stages.quantize import report as quantize_report
    from edgekiln.stages.quantize import work
    from edgekiln.targets.int8 import Int8Options

    class Scheme:
        def simulate(self, model, calibration, options, **kwargs):
            return options.calibrator  # the "graph": which calibrator built it

        def calibrator_used(self, options):
            return "minmax" if options.calibrator == "minmax" else "histogram (L2 error)"

    scores = {"minmax": 90.0, "percentile": 97.5}
    monkeypatch.setattr(work, "_simulated_accuracy", lambda scheme, graph, data, bundle: scores[graph])
    floated = []

    def keep_float(scheme, bundle, calibration, options, data, why, breach):
        floated.append(options.calibrator)
        return "float graph", 98.0, {"applied": True, "float_layers": ["conv1"]}

    monkeypatch.setattr(work, "_keep_float", keep_float)

    def breach(accuracy):
        return None if accuracy >= 97.0 else f"{98.0 - accuracy:.2f} points below prune, budget 1"

    figures = QuantizeRecord()
    from types import SimpleNamespace

    bundle = SimpleNamespace(model=None)
    graph, accuracy, options, kept = work._climb(QuantizeConfig(), Scheme(), bundle, None, Int8Options(), None,
                                                 "minmax", 90.0, breach, figures)
    assert kept is bundle  # no bias correction tried: the model is the one it was given
    assert (graph, accuracy, options.calibrator) == ("percentile", 97.5, "percentile") and floated == []
    assert figures.calibrator_chosen == "percentile" and figures.mixed_precision is None
    steps = figures.ladder.steps
    assert [s.rung for s in steps] == ["plain", "calibration"] and steps[1].breach is None
    assert figures.ladder.stopped == "within budget at rung calibration"
    sentence = quantize_report.ladder_sentence(figures.ladder)
    assert "plain INT8 (minmax calibration) scored 90.00% on val" in sentence
    assert "histogram (L2 error) calibration -> 97.50% (within budget" in sentence
    # ladder = false: float layers only, from the configured calibrator
    figures = QuantizeRecord()
    work._climb(QuantizeConfig(ladder=False), Scheme(), bundle, None, Int8Options(), None, "minmax", 90.0, breach,
                figures)
    assert floated == ["minmax"] and [s.rung for s in figures.ladder.steps] == ["plain", "float_layers"]
    assert QuantizeConfig(accuracy_aware=False).rungs == ["calibration", "equalization", "bias_correction", "qat"]
    assert QuantizeConfig(mode="qat").rungs == []  # QAT is trained, not repaired


def test_equalization_then_bias_correction_follow_calibration_and_each_model_is_kept_when_it_scores_higher(
        monkeypatch):
    """The calibrator is no better; cross-layer equalization helps but not enough; bias
    correction, measured on the equalized model (as Nagel et al. stack them), lifts the INT8
    simulation within budget: the stage goes on with that model (what export converts), and
    says so."""
    from edgekiln.stages.quantize import QuantizeConfig, bias_correction, equalization
    from edgekiln.stages.quantize import report as quantize_report
    from edgekiln.stages.quantize import work
    from edgekiln.targets.int8 import Int8Options
    from edgekiln.training import modeling

    class Scheme:
        def simulate(self, model, calibration, options, **kwargs):
            return {"corrected model": "corrected", "equalized model": "equalized"}.get(model, options.calibrator)

        def calibrator_used(self, options):
            return options.calibrator

    scores = {"minmax": 90.0, "percentile": 89.0, "equalized": 93.0, "corrected": 97.2}
    monkeypatch.setattr(work, "_simulated_accuracy", lambda scheme, graph, data, bundle: scores[graph])
    monkeypatch.setattr(equalization, "equalized", lambda model, calibration: (
        "equalized model", {"pairs": 7, "layers": ["a -> b"], "rounds": 3, "largest_scale": 4.0}))

    def corrected(model, calibration, per_channel):
        assert model == "equalized model"
        return "corrected model", {"layers_corrected": 54, "layers_without_a_bias": [], "largest_shift": None,
                                   "images": 8}

    monkeypatch.setattr(bias_correction, "corrected", corrected)

    def breach(accuracy):
        return None if accuracy >= 97.0 else f"{98.0 - accuracy:.2f} points below prune, budget 1"

    figures = QuantizeRecord()
    bundle = modeling.ModelBundle("resnet10t", "the model", 10, 32)
    graph, accuracy, options, kept = work._climb(QuantizeConfig(), Scheme(), bundle, None, Int8Options(), None,
                                                 "minmax", 90.0, breach, figures)
    assert (graph, accuracy, options.calibrator, kept.model) == ("corrected", 97.2, "minmax", "corrected model")
    assert [s.rung for s in figures.ladder.steps] == ["plain", "calibration", "equalization", "bias_correction"]
    assert figures.equalization.pairs == 7 and figures.bias_correction.layers_corrected == 54
    sentence = quantize_report.ladder_sentence(figures.ladder)
    assert "cross-layer equalization (7 layer pairs) -> 93.00% (still over" in sentence
    assert "bias correction (54 layers) -> 97.20% (within budget" in sentence


def test_qat_is_the_last_rung_and_its_model_and_state_are_kept_only_when_better(monkeypatch, tmp_path):
    """Every cheaper rung misses the budget; the QAT rung trains on the bundle the ladder
    reached and, better on val, becomes the stage's model, with its fake-quantize state
    written beside the result (what export builds the artifacts from). A QAT no better than
    the rungs before it is recorded and not kept."""
    import dataclasses

    from edgekiln.stages.quantize import QuantizeConfig, bias_correction, equalization
    from edgekiln.stages.quantize import report as quantize_report
    from edgekiln.stages.quantize import work
    from edgekiln.targets.int8 import Int8Options
    from edgekiln.training import modeling
    from edgekiln.training.int8_recipe import QAT_STATE_FILE

    class Scheme:
        def simulate(self, model, calibration, options, **kwargs):
            return options.calibrator

        def calibrator_used(self, options):
            return options.calibrator

    monkeypatch.setattr(work, "_simulated_accuracy", lambda scheme, graph, data, bundle: {"minmax": 90.0}.get(graph, 89.0))
    monkeypatch.setattr(equalization, "equalized", lambda model, calibration: (
        model, {"pairs": 2, "layers": [], "rounds": 1, "largest_scale": 1.0}))
    monkeypatch.setattr(bias_correction, "corrected", lambda model, calibration, per_channel: (
        model, {"layers_corrected": 3, "layers_without_a_bias": [], "largest_shift": None, "images": 8}))
    monkeypatch.setattr(work, "_keep_float", lambda scheme, bundle, calibration, options, data, why, breach: (
        "minmax", 90.0, {"applied": False, "float_layers": [], "why_not": "budget not met even with all 9 layers"}))

    def breach(accuracy):
        return None if accuracy >= 97.0 else f"{98.0 - accuracy:.2f} points below prune, budget 1"

    bundle = modeling.ModelBundle("resnet10t", "the model", 10, 32)
    trained_on = []

    def qat_rung(score):
        def train(bundle, options):
            trained_on.append((bundle.model, options.float_layers))
            return "qat graph", score, dataclasses.replace(bundle, model="tuned model"), {"q": "state"}, {"epochs": 3}
        return train

    monkeypatch.setattr(work, "save_file", lambda state, path: path.write_text(str(state)))
    figures = QuantizeRecord()
    graph, accuracy, options, kept = work._climb(QuantizeConfig(), Scheme(), bundle, None, Int8Options(), None,
                                                 "minmax", 90.0, breach, figures, qat_rung=qat_rung(97.4),
                                                 workdir=tmp_path)
    assert trained_on == [("the model", ())]
    assert (graph, accuracy, kept.model) == ("qat graph", 97.4, "tuned model")
    assert [s.rung for s in figures.ladder.steps] == ["plain", "calibration", "equalization", "bias_correction",
                                                      "float_layers", "qat"]
    assert figures.ladder.stopped == "within budget at rung qat" and figures.qat.epochs == 3
    assert (tmp_path / QAT_STATE_FILE).is_file()
    assert "QAT with distillation (3 epochs) -> 97.40% (within budget" in quantize_report.ladder_sentence(
        figures.ladder)

    other = tmp_path / "other"
    other.mkdir()
    figures = QuantizeRecord()
    graph, accuracy, _, kept = work._climb(QuantizeConfig(ladder=["qat"]), Scheme(), bundle, None, Int8Options(),
                                           None, "minmax", 90.0, breach, figures, qat_rung=qat_rung(85.0),
                                           workdir=other)
    assert (graph, accuracy, kept.model) == ("minmax", 90.0, "the model") and figures.qat is None
    assert figures.ladder.steps[-1].kept is False and not (other / QAT_STATE_FILE).exists()
    assert figures.ladder.stopped.startswith("every rung tried, still 8.00 points below")


def test_the_qat_rung_puts_the_training_recipes_in_the_stage_key():
    from edgekiln.stages.quantize import QuantizeConfig, unkeyed

    assert unkeyed(QuantizeSections(quantize=QuantizeConfig(ladder=["calibration"]))) == {"distill", "train"}
    assert unkeyed(QuantizeSections(quantize=QuantizeConfig())) == set()  # auto: the QAT rung may train
    assert unkeyed(QuantizeSections(quantize=QuantizeConfig(ladder=[], accuracy_aware=False))) == {"distill", "train", "budget"}


def test_bias_correction_makes_each_int8_layer_unbiased_through_its_batch_norm():
    """A convolution whose batch norm follows: after the correction, the INT8 output of the
    folded pair has the float output's mean in every channel (before: shifted)."""
    import torch.nn.functional as F

    from edgekiln.stages.quantize import bias_correction as bc
    from edgekiln.stages.quantize.sensitivity import activation_int8, weight_int8

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, groups=8, bias=False), torch.nn.BatchNorm2d(8)).eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.randn_like(model[0].weight) * torch.linspace(0.01, 2.0, 8).reshape(-1, 1, 1, 1))
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
        model[1].weight.uniform_(0.5, 2)
    calibration = (torch.rand(64, 8, 12, 12) * 3).numpy()
    x = torch.from_numpy(calibration)

    def int8_mean_error(m):
        w, b = bc.folded(m[0], m[1])
        y = F.conv2d(x, w, b, groups=8)
        y_int8 = F.conv2d(activation_int8(x), weight_int8(w, True), b, groups=8)
        return (model(x) - y_int8).mean((0, 2, 3)), (model(x) - y).abs().max()

    before, folding_error = int8_mean_error(model)
    assert folding_error < 1e-4  # the fold is the model
    fixed, record = bc.corrected(model, calibration)
    after, _ = int8_mean_error(fixed)
    assert record["layers_corrected"] == 1 and record["layers_without_a_bias"] == []
    assert before.abs().max() > 1e-3 and after.abs().max() < 1e-5, (before, after)


def test_bias_correction_leaves_a_layer_whose_batch_norm_has_no_shift_and_says_so():
    """A batch norm without an affine shift cannot carry the correction: the layer is listed
    as left alone, and the model is not changed there."""
    from edgekiln.stages.quantize import bias_correction as bc

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, bias=False), torch.nn.BatchNorm2d(4, affine=False),
                                torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 2)).eval()
    fixed, record = bc.corrected(model, torch.rand(8, 3, 8, 8).numpy())
    assert record["layers_without_a_bias"] == ["0"] and record["layers_corrected"] == 1
    assert torch.equal(fixed[0].weight, model[0].weight)


# Slow suite: 23 s of real training. The default suite keeps the rung's logic (scripted
# accuracies, test_qat_is_the_last_rung_...) and a real QAT conversion (test_qat_state.py).
@pytest.mark.slow
def test_the_stage_climbs_to_a_real_qat_rung_and_hands_on_its_model_and_state(tmp_path):
    """The quantize stage itself, on digits at 16 px with a small trained network and a
    budget plain PTQ cannot meet: the QAT rung trains for real (one epoch, distilling from
    the reference), is scored on val, and is kept exactly when it beats the rungs before it;
    then the stage's model is QAT's and its fake-quantize state lies beside the result."""
    from edgekiln.data.config import DataConfig
    from edgekiln.data.dataset import load_dataset
    from edgekiln.engine.config import config_from_text
    from edgekiln.stages.quantize import work
    from edgekiln.stages.result import StageResult
    from edgekiln.training import evaluation, modeling, trainer
    from edgekiln.training.int8_recipe import QAT_STATE_FILE

    data = load_dataset(DataConfig(image_size=16))
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2),
                        nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    bundle = modeling.ModelBundle("small", net, 10, 16)
    cfg = config_from_text('[data]\nsource = "digits"\nimage_size = 16\n[teacher]\ncandidates = ["resnet10t"]\n'
                           '[quantize]\nladder = ["qat"]\nepochs = 1\ncalibration_samples = 16\n'
                           '[budget.max_drop]\nquantize = 0.0\n[[targets]]\nname = "s"\nformat = "onnx"\n', base=tmp_path, name="qat.toml")
    trainer.fit(bundle, data, 2, lr=3e-3, seed=0, desc="small", train=cfg.train)
    # Scored 100 % before INT8: no INT8 model can meet a zero-point budget, so the ladder climbs.
    previous = StageResult.with_model(100.0, bundle, stage="prune", macs=0)
    config = QuantizeSections(quantize=cfg.quantize, train=cfg.train, distill=cfg.distill, budget=cfg.budget)
    result = work.run(data, config, tmp_path, previous=previous, reference=previous)
    plain, qat = result.figures.ladder.steps
    assert plain.rung == "plain" and qat.rung == "qat" and qat.epochs == 1 and qat.seconds > 0
    assert qat.kept == (qat.accuracy > plain.accuracy)
    assert (tmp_path / QAT_STATE_FILE).is_file() == qat.kept
    assert result.accuracy == max(plain.accuracy, qat.accuracy)
    if qat.kept:
        assert result.bundle.model is not net and result.figures.qat.accuracy == qat.accuracy
        assert result.figures.qat.float_accuracy == evaluation.evaluate(result.bundle, data)
    else:
        assert result.bundle.model is net and result.figures.qat is None
