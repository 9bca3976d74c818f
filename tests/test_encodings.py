"""Candidate encodings per format (fp32, fp16, INT8, dynamic-range INT8) and the choice among
them: what each writes runs in its runtime, close to torch, at the expected size; the fastest
within the accuracy and size budgets ships."""

import re

import numpy as np
import pytest
import torch
from torch import nn

from edgekiln.engine.config import ConfigError, load_config
from edgekiln.targets import encodings as encoding
from edgekiln.targets import get_format

coreml_format = get_format("coreml")


@pytest.fixture(scope="module")
def model():
    """Small enough to convert in seconds; its convolutions are big enough (over 2048 weights)
    that coremltools quantizes them, and its weights (300k) big enough, even in INT8, that
    ai-edge-quantizer stores them past the flatbuffer (from 256 KB)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 64, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(64, 512, 3, stride=2, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 10)).eval()


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).standard_normal((16, 3, 16, 16)).astype(np.float32)


@pytest.mark.parametrize("fmt_name", ["onnx", "tflite"])
def test_every_encoding_runs_in_its_runtime_close_to_torch_at_its_size(fmt_name, model, images, tmp_path):
    fmt = get_format(fmt_name)
    with torch.no_grad():
        reference = model(torch.from_numpy(images)).numpy()
    scale = np.abs(reference).max()
    sizes, errors = {}, {}
    for name in fmt.ENCODINGS:
        path = tmp_path / f"m.{name}{fmt.SUFFIX}"
        fmt.export(model, torch.from_numpy(images[:1]), images, path, {"edgekiln_encoding": name}, name)
        assert fmt.read_metadata(path)["edgekiln_encoding"] == name
        errors[name] = np.abs(fmt.predict(path, images) - reference).max() / scale
        sizes[name] = path.stat().st_size
    assert errors["fp32"] < 1e-5 and errors["fp16"] < 1e-2, errors
    assert errors["int8"] < 0.2 and errors["dynamic"] < 0.2, errors
    if "int16x8" in errors:  # 16x8, on this untrained model's raw logits: within INT8's bound
        assert errors["int16x8"] < 0.3 and sizes["int16x8"] < 0.4 * sizes["fp32"], (errors, sizes)
    weights = 4 * sum(p.numel() for p in model.parameters())
    assert sizes["fp32"] > weights  # float32 weights, and the graph
    assert sizes["fp16"] < 0.6 * sizes["fp32"], sizes
    assert sizes["int8"] < 0.4 * sizes["fp32"] and sizes["dynamic"] < 0.4 * sizes["fp32"], sizes


def test_core_ml_float_encodings_store_no_int8_weights_and_have_float_proxies(model, images, tmp_path):
    example = torch.from_numpy(images[:1])
    sizes = {}
    for name in coreml_format.ENCODINGS:
        path = tmp_path / f"m.{name}.mlpackage"
        coreml_format.export(model, example, images, path, {"edgekiln_precision": coreml_format.ENCODINGS[name]}, name)
        found = coreml_format.check(path, tuple(example.shape))  # reads the precision from the package
        assert (found["int8_weight_ops"] > 0) == (name == "int8")
        sizes[name] = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    assert sizes["int8"] < sizes["fp16"] < sizes["fp32"], sizes
    assert "dynamic" not in coreml_format.ENCODINGS
    with torch.no_grad():
        reference = model(torch.from_numpy(images))
        half = coreml_format.proxy_model(model, encoding="fp16")(torch.from_numpy(images))
    assert half.dtype == torch.float32
    assert 0 < (half - reference).abs().max() < 1e-2 * reference.abs().max()


def _candidate(name, accuracy, p50, size=1_000_000, source="host"):
    from edgekiln.targets.artifact import Artifact

    return Artifact(target="t", format="onnx", file=f"m.{name}.onnx", encoding=name, precision=name,
                    accuracy=accuracy, accuracy_source="runtime", size_bytes=size,
                    latency_ms=None if p50 is None else {"p50": p50}, latency_source=source,
                    budget={"size_mb": 2.0}, budget_keys={"size_mb": "budget.size_mb of profile p"})


def _breach_below(floor):
    return lambda accuracy: None if accuracy >= floor else f"below {floor}"


def test_the_fastest_candidate_within_budget_ships_and_the_reason_names_the_runner_up():
    records = [_candidate("fp32", 95.0, 1.6), _candidate("fp16", 95.0, 2.4), _candidate("int8", 94.0, 6.4)]
    best, why = encoding.choose(records, _breach_below(90))
    assert records[best].encoding == "fp32"
    assert "1.6 ms" in why and "next: fp16 at 2.4 ms (1.50x)" in why


def test_a_faster_candidate_over_the_accuracy_or_size_budget_loses_and_is_named():
    records = [_candidate("fp32", 95.0, 3.0, size=4_000_000), _candidate("fp16", 95.0, 2.0),
               _candidate("int8", 80.0, 1.0)]
    best, why = encoding.choose(records, _breach_below(90))
    assert records[best].encoding == "fp16"
    assert "int8 (accuracy 80.00%: below 90)" in why
    assert "fp32 (size 4.00 MB > budget.size_mb of profile p = 2)" in why


def test_unknown_latency_ranks_last_and_no_eligible_candidate_ships_the_most_accurate():
    records = [_candidate("dynamic", 95.0, None), _candidate("int8", 94.0, 5.0)]
    best, why = encoding.choose(records, _breach_below(90))
    assert records[best].encoding == "int8" and "latency unknown, so not preferred: dynamic" in why
    best, why = encoding.choose(records, _breach_below(99))
    assert records[best].encoding == "dynamic" and why.startswith("no candidate meets the budgets")


def test_candidates_auto_is_every_encoding_of_the_format_and_none_is_int8():
    assert encoding.candidates("auto", coreml_format.ENCODINGS) == ["fp32", "fp16", "int8"]
    assert encoding.candidates(None, coreml_format.ENCODINGS) == ["int8"]
    assert encoding.candidates(["int8", "fp32"], coreml_format.ENCODINGS) == ["int8", "fp32"]


@pytest.mark.parametrize("value, message", [
    ('["dynamic"]', 'targets.t.encoding = ["dynamic"] (line 6): coreml artifacts cannot be dynamic'),
    ('["fp32", "fp32"]', "lists an encoding twice"),
    ('"fastest"', "targets.t.encoding = \"fastest\" (line 6): must be 'auto' or must be a list"),
])
def test_a_bad_encoding_is_a_config_error_naming_the_key(tmp_path, value, message):
    path = tmp_path / "c.toml"
    path.write_text(f'[teacher]\ncandidates = ["resnet10t"]\n[[targets]]\nname = "t"\nformat = "coreml"\n'
                    f"encoding = {value}\n")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(path)


def test_a_candidate_the_profile_cannot_time_gets_no_latency_but_a_lone_artifact_fails(model, tmp_path):
    from edgekiln.errors import InputError
    from edgekiln.stages.export import work as export
    from edgekiln.targets.cost import cost_features
    from edgekiln.targets.target import TargetConfig

    target = TargetConfig(name="android", profile="pixel-3-cpu", runner="estimate")
    profile = target.resolve()
    features = cost_features(model, 16)
    # pixel-3-cpu has float and int8 references, none of dynamic-range INT8
    record = export._latency(target, profile, tmp_path / "m.tflite", features, "dynamic", candidate=True)
    assert record["latency_ms"] is None and "no dynamic reference measurements" in record["latency_notes"][0]
    with pytest.raises(InputError, match="no dynamic reference measurements"):
        export._latency(target, profile, tmp_path / "m.tflite", features, "dynamic")
    assert export._latency(target, profile, tmp_path / "m.tflite", features, "fp16")["latency_ms"]["p50"] > 0


def _ms(median, spread, rounds=15):
    """Round p50s around `median` whose middle half spans `spread` of it."""
    return list(np.linspace(median * (1 - spread), median * (1 + spread), rounds))


def test_a_faster_candidate_within_the_noise_of_a_smaller_one_loses_to_it():
    records = [_candidate("fp32", 95.0, 1.0, size=4_000), _candidate("int8", 95.0, 1.1, size=1_000)]
    fp32 = _ms(1.00, 0.02)
    int8 = [t * 1.04 * (1 + d) for t, d in zip(fp32, np.linspace(-0.1, 0.1, 15)[::-1])]  # 4 % slower, +-10 %
    assert encoding.paired(int8, fp32)[1] == pytest.approx(0.10, abs=0.002)
    best, why = encoding.choose(records, _breach_below(90), {0: fp32, 1: int8})
    assert records[best].encoding == "int8"
    assert "fp32 at 1 ms is 4.0% faster than int8 at 1.04 ms (median of 15 interleaved rounds)" in why
    assert "not more than the 10.0% margin" in why


def test_a_faster_candidate_beyond_the_noise_ships_even_when_the_host_drifts():
    records = [_candidate("fp32", 95.0, 9.9, size=4_000), _candidate("int8", 95.0, 0.1, size=1_000)]
    fp32 = _ms(1.00, 0.40)  # rounds 60 % apart: the host's drift, which hits both alike
    int8 = [t * 1.3 for t in fp32]
    assert encoding.noise(fp32) == pytest.approx(0.40, abs=0.01) and encoding.paired(int8, fp32)[1] < 1e-9
    best, why = encoding.choose(records, _breach_below(90), {0: fp32, 1: int8})  # the rounds decide
    assert records[best].encoding == "fp32"
    assert why.startswith("lowest p50 (1 ms, median of 15 interleaved rounds)")
    assert "faster than the smaller int8 (1.3 ms) by 30.0%, more than the 2.0% margin" in why


def test_without_noise_a_gain_under_the_minimum_margin_is_a_tie_that_the_smaller_wins():
    records = [_candidate("fp32", 95.0, 1.00, size=4_000, source="estimate"),
               _candidate("fp16", 95.0, 1.01, size=2_000, source="estimate")]
    assert records[encoding.choose(records, _breach_below(90))[0]].encoding == "fp16"
    records[0].latency_ms = {"p50": 0.9}
    assert records[encoding.choose(records, _breach_below(90))[0]].encoding == "fp32"


def test_interleaved_rounds_rotate_the_order_and_time_each_call_per_round():
    import time

    from edgekiln.targets.runtime_bench import interleaved_ms

    order = []
    calls = [lambda: order.append("a"), lambda: (order.append("b"), time.sleep(0.002))]
    rounds = interleaved_ms(calls, warmup=1, rounds=4, runs=2)
    assert [len(r) for r in rounds] == [4, 4]
    assert min(rounds[1]) >= 2.0 > max(rounds[0])
    timed = order[2:]  # after one warm-up call each
    assert [timed[i * 4] for i in range(4)] == ["a", "b", "a", "b"]  # who goes first rotates


def test_the_host_runner_times_candidates_interleaved_in_one_process(model, images, tmp_path):
    from edgekiln.targets import runners
    from edgekiln.targets.profiles import load_profile

    onnx = get_format("onnx")
    paths = []
    for name in ("fp32", "int8"):
        paths.append(tmp_path / f"m.{name}.onnx")
        onnx.export(model, torch.from_numpy(images[:1]), images, paths[-1], {}, name)
    profile = load_profile("x86-server-avx2")
    profile = profile.model_copy(update={"runner": profile.runner.model_copy(update={"runs": 10, "choice_rounds": 3})})
    found = runners.interleave(paths, profile)
    assert found.runner == "host" and found.rounds == 3 and found.runs_per_round == 5
    assert [len(r) for r in found.round_p50_ms] == [3, 3] and all(t > 0 for r in found.round_p50_ms for t in r)
    assert found.device.startswith("this host") and found.tool.startswith("onnxruntime")


def test_onnx_int16x8_is_built_on_request_with_int16_activations_and_runs_in_onnxruntime(model, images, tmp_path):
    """onnxruntime's QDQ with 16-bit activations (opset 21): never one of "auto"'s candidates,
    its activations' QuantizeLinear nodes int16 and its weights INT8, graded in onnxruntime
    closer to float than the same model's INT8."""
    import onnx

    fmt = get_format("onnx")
    assert "int16x8" not in encoding.candidates("auto", fmt.ENCODINGS, fmt.ON_REQUEST)
    example = torch.from_numpy(images[:1])
    with torch.no_grad():
        reference = model(torch.from_numpy(images)).numpy()
    errors = {}
    for name in ("int8", "int16x8"):
        path = tmp_path / f"m.{name}.onnx"
        applied = fmt.export(model, example, images, path, {"edgekiln_encoding": name}, name)
        errors[name] = np.abs(fmt.predict(path, images) - reference).max() / np.abs(reference).max()
    assert applied["activations"] == "int16, calibrated" and applied["weights"] == "S16S8"
    graph = onnx.load(str(path)).graph
    zero_points = {i.name: i.data_type for i in graph.initializer}
    activation_types = {zero_points[n.input[2]] for n in graph.node if n.op_type == "QuantizeLinear"}
    assert activation_types == {onnx.TensorProto.INT16}, activation_types
    weight_types = {i.data_type for i in graph.initializer if i.name.endswith("weight_quantized")}
    assert weight_types == {onnx.TensorProto.INT8}, weight_types
    assert errors["int16x8"] < errors["int8"], errors


def test_int16x8_is_built_on_request_with_the_app_interface_and_int16_activations(model, images, tmp_path):
    """TFLite's 16x8 (ai-edge-quantizer's static_wi8_ai16): never one of "auto"'s candidates
    (its CPU kernels are reference ones), built when a target lists it, wrapped in the same
    app interface as the other encodings and graded in ai-edge-litert."""
    import json

    from ai_edge_litert.interpreter import Interpreter

    fmt = get_format("tflite")
    assert "int16x8" not in encoding.candidates("auto", fmt.ENCODINGS, fmt.ON_REQUEST)
    assert encoding.candidates(["int8", "int16x8"], fmt.ENCODINGS, fmt.ON_REQUEST) == ["int8", "int16x8"]
    metadata = {"labels": json.dumps([str(i) for i in range(10)]),
                "preprocessing": json.dumps({"image_size": 16, "mean": [0.5] * 3, "std": [0.5] * 3})}
    path = tmp_path / "m.int16x8.tflite"
    applied = fmt.export(model, torch.from_numpy(images[:1]), images, path, dict(metadata), "int16x8")
    assert applied["activations"] == "int16, calibrated"
    interpreter = Interpreter(model_path=str(path))
    assert interpreter.get_input_details()[0]["shape"].tolist() == [1, 16, 16, 3]  # the app's NHWC input
    assert any(d["dtype"] == np.int16 for d in interpreter.get_tensor_details())
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(images)), 1).numpy()
    assert np.abs(fmt.predict(path, images) - expected).max() < 0.05

