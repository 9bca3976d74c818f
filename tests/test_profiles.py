"""Latency profiles as data files, target overrides, and the estimate runner's cost model."""

import textwrap

import numpy as np
import pytest
import torch

from edgekiln.engine.config import ConfigError, load_config
from edgekiln.targets import format_names, runners
from edgekiln.targets.cost import CostFeatures, cost_features
from edgekiln.targets.errors import RunnerFailed
from edgekiln.targets.profiles import ProfileError, load_profile, shipped_profiles
from edgekiln.targets.runners import estimate

CONFIG = """
[teacher]
candidates = ["resnet10t"]
{targets}
"""


def config(tmp_path, targets):
    path = tmp_path / "pipeline.toml"
    path.write_text(textwrap.dedent(CONFIG.format(targets=targets)))
    return path


def test_at_least_five_devices_ship_and_every_one_loads():
    names = shipped_profiles()
    assert len(names) >= 5
    for name in names:
        profile = load_profile(name)
        assert profile.name == name and profile.device and profile.format in format_names()
        if profile.estimate is not None:
            assert len(estimate.load_references(profile.references_path())) >= 2


def test_a_target_takes_format_and_budgets_from_its_profile_and_may_override_them(tmp_path):
    cfg = load_config(config(tmp_path, """
        [[targets]]
        name = "phone"
        profile = "pixel-3-cpu"
        budget = { p50_ms = 5.0 }
        threads = 2
        runner = "estimate"
        """))
    target = cfg.targets[0]
    profile = target.effective_profile
    assert target.format == "tflite" and target.artifact_name == "model.tflite"
    assert profile.budget.p50_ms == 5.0 and profile.budget.p90_ms == 25.0  # override, and the profile's own
    assert profile.runtime.threads == 2 and profile.runner.kind == "estimate"
    assert load_profile("pixel-3-cpu").budget.p50_ms == 20.0  # the shipped file is untouched


def test_a_users_own_profile_file_needs_no_code(tmp_path, monkeypatch):
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "lab-board.toml").write_text(
        'name = "lab-board"\ndevice = "our lab board"\nformat = "onnx"\n[runner]\nkind = "host"\n')
    cfg = load_config(config(tmp_path, '[[targets]]\nname = "board"\nprofile = "profiles/lab-board.toml"\n'))
    assert cfg.targets[0].effective_profile.device == "our lab board"
    monkeypatch.setenv("EDGEKILN_PROFILE_PATH", str(tmp_path / "profiles"))
    assert load_profile("lab-board").format == "onnx"


@pytest.mark.parametrize("targets, message", [
    ('[[targets]]\nname = "x"\nprofile = "pixel-99"\n', "targets.x.profile = \"pixel-99\" (line 6): unknown profile 'pixel-99'"),
    ('[[targets]]\nname = "x"\nprofile = "pixel-3-cpu"\nformat = "onnx"\n', "is for tflite artifacts, not format 'onnx'"),
    ('[[targets]]\nname = "x"\nprofile = "missing.toml"\n', "missing.toml does not exist"),
    ('[[targets]]\nname = "x"\n', "give a format (coreml, executorch, onnx, tflite) or a profile"),
    ('[[targets]]\nname = "x"\nprofile = "pixel-3-cpu"\nbudget = { p50 = 3 }\n', "targets.x.budget.p50 = 3 (line 7): unknown key (did you mean 'p50_ms'?)"),
])
def test_bad_profiles_are_config_errors_naming_the_key(tmp_path, targets, message):
    with pytest.raises(ConfigError) as e:
        load_config(config(tmp_path, targets))
    assert message in str(e.value)


def test_a_profile_with_a_misspelled_key_names_the_file_and_key(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('name = "bad"\ndevice = "d"\nformat = "onnx"\n[runner]\nkind = "host"\nwarmup = 3\n')
    with pytest.raises(ProfileError, match=r"bad.toml does not fit the schema: runner.warmup: unknown key"):
        load_profile(path)


def test_cost_features_count_dense_and_depthwise_macs_exactly():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1, bias=False),  # 8x8 out: 64*8*27 = 13824 MACs
        torch.nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),  # depthwise: 64*8*9 = 4608
        torch.nn.Flatten(), torch.nn.Linear(8 * 64, 10, bias=False))  # 5120
    f = cost_features(model, 8)
    assert (f.macs, f.depthwise_macs, f.dense_macs) == (13824 + 4608 + 5120, 4608, 13824 + 5120)
    assert f.params == 3 * 8 * 9 + 8 * 9 + 512 * 10
    assert f.activations == 512 + 512 + 512 + 10
    assert f.traffic_bytes("int8") == f.params + f.activations and f.traffic_bytes("float") == 4 * f.traffic_bytes("int8")


def _synthetic(coefficients, n, precision="float"):
    rng = np.random.default_rng(0)
    refs = []
    for i in range(n):
        f = CostFeatures(macs=int(rng.integers(50e6, 900e6)), depthwise_macs=int(rng.integers(1e6, 40e6)),
                         params=int(rng.integers(1e6, 10e6)), activations=int(rng.integers(3e6, 30e6)), image_size=224)
        x = np.array([f.dense_macs / 1e6, f.depthwise_macs / 1e6, f.traffic_bytes(precision) / 1e6, 1.0])
        refs.append(estimate.Reference(f"m{i}", precision, float(x @ coefficients), f, "synthetic"))
    return refs


def test_the_cost_model_recovers_a_linear_device_and_its_leave_one_out_error_is_small():
    truth = np.array([0.02, 0.3, 0.05, 0.4])  # ms per dense MMAC, depthwise MMAC, MB moved; fixed ms
    refs = _synthetic(truth, 8)
    model = estimate.fit(refs, "float")
    np.testing.assert_allclose(model.coefficients, truth, rtol=1e-6)
    assert estimate.error_pct(estimate.leave_one_out(refs, "float")) < 1e-6


def test_the_estimate_runner_labels_its_figures_and_states_its_error(tmp_path):
    features = CostFeatures(macs=56_000_000, depthwise_macs=7_000_000, params=2_500_000, activations=4_800_000,
                            image_size=224, layers=165)
    result = runners.measure(tmp_path / "m.tflite", load_profile("pixel-3-cpu").model_copy(
        update={"runner": load_profile("pixel-3-cpu").runner.model_copy(update={"kind": "estimate"})}),
        features, "int8")
    # p90 from the p50 (x 1.3, its interval's upper end x 2); no artifact file here: no memory
    assert result.source == "estimate" and result.latency_ms["p90"] == pytest.approx(1.3 * result.latency_ms["p50"])
    assert result.latency_ms["p90_interval"][1] == pytest.approx(2 * result.latency_ms["p50_interval"][1])
    assert result.peak_memory_mb is None
    # MobileNetV3-Small-sized (56 MMACs) on a Pixel 3's 4 threads: between the published
    # MobileNetV1 0.5 and 0.75 at 128 px (1.7 and 3.1 ms INT8)
    assert 1 < result.latency_ms["p50"] < 8
    assert result.extra["error_pct_leave_one_out"] is not None and "(leave-one-out)" in " ".join(result.notes)
    low, high = result.latency_ms["p50_interval"]  # from the held-out rows' errors, around the point
    assert low <= result.latency_ms["p50"] <= high and "interval" in " ".join(result.notes)
    pixel6 = runners.measure(tmp_path / "m.tflite", load_profile("pixel-6-cpu").model_copy(
        update={"runner": load_profile("pixel-6-cpu").runner.model_copy(update={"kind": "estimate"})}),
        features, "int8")
    assert pixel6.extra["ratio"] == 0.735 and "float estimate x 0.735" in " ".join(pixel6.notes)


def test_a_given_floor_is_the_least_any_estimate_can_be_and_must_be_under_every_row():
    truth = np.array([0.02, 0.3, 0.05, 0.0])
    refs = [estimate.Reference(r.model, r.precision, r.latency_ms + 0.25, r.features, r.source)
            for r in _synthetic(truth, 8)]  # a runtime with 0.25 ms per inference whatever the model
    model = estimate.fit(refs, "float", floor=0.25)
    assert model.fixed_ms == 0.25 and "overhead_ms" not in model.columns
    np.testing.assert_allclose(model.coefficients, truth[:3], rtol=1e-6, atol=1e-9)
    tiny = CostFeatures(macs=10_000, depthwise_macs=1_000, params=1_000, activations=1_000, image_size=8)
    assert 0.25 <= model.predict(tiny) < 0.26
    assert estimate.fit(refs, "float").fixed_ms == pytest.approx(0.25, rel=1e-6)  # eight rows: fitted
    fastest = min(refs, key=lambda r: r.latency_ms)
    with pytest.raises(RunnerFailed, match=f"is not below the reference row {fastest.model} "):
        estimate.fit(refs, "float", floor=fastest.latency_ms + 0.1)
    assert estimate.outside_range(tiny, refs).startswith("0.01 MMACs outside the rows'")
    assert estimate.outside_range(refs[0].features, refs) is None


def test_an_estimate_gate_decides_on_the_interval_upper_end_unless_the_target_says_point():
    from edgekiln.gates import budget_checks
    from edgekiln.targets.artifact import Artifact

    artifact = Artifact(target="phone", format="tflite", file="m.tflite", profile="p", budget={"p50_ms": 2.0},
                        latency_source="estimate", latency_ms={"p50": 1.5, "p50_interval": [1.0, 3.0]})
    [gate], _ = budget_checks("target phone", artifact)
    assert not gate.passed and gate.decided_on == 3.0
    assert "interval 1-3: decided on its upper end" in gate.message() and "over budget.p50_ms of profile p" in gate.message()
    artifact.estimate_gate = "point"
    [gate], _ = budget_checks("target phone", artifact)
    assert gate.passed and gate.rule == "point"
    artifact.estimate_gate, artifact.latency_ms = "interval", {"p50": 0.5, "p50_interval": None}
    [gate], _ = budget_checks("target phone", artifact)  # no error bound: cannot pass on the estimate
    assert not gate.passed and 'estimate_gate = "point"' in gate.message() and gate.to_dict()["decided_on"] is None
    artifact.latency_source = "device"  # a measurement decides on itself
    [gate], _ = budget_checks("target phone", artifact)
    assert gate.passed and gate.rule == "point"


def test_an_order_of_magnitude_estimate_decides_no_budget_whatever_the_target_allows():
    from edgekiln.gates import budget_checks
    from edgekiln.targets.artifact import Artifact

    artifact = Artifact(target="phone", format="tflite", file="m.tflite", profile="p", budget={"p50_ms": 2.0},
                        latency_source="estimate", latency_ms={"p50": 0.5, "p50_interval": [0.4, 0.6]},
                        latency_detail={"order_of_magnitude": "3 reference row(s) of its precision, fewer than 6"},
                        estimate_gate="point")
    gates, not_checked = budget_checks("target phone", artifact)
    [skipped] = not_checked
    assert gates == [] and "order-of-magnitude estimate (3 reference row(s)" in skipped.message()
    assert "edgekiln profile calibrate" in skipped.message()
    assert skipped.to_dict() | {"why": None} == {
        "kind": "latency", "subject_type": "target", "subject": "phone", "metric": "p50_ms", "unit": "ms",
        "value": 0.5, "limit": 2.0, "status": "not_checked", "passed": None, "budget_key": skipped.budget_key,
        "label": "p50 latency", "why": None}


def _row(name, latency, macs, depthwise, params, activations, layers, precision="w8a16"):
    return estimate.Reference(name, precision, latency, CostFeatures(macs=macs, depthwise_macs=depthwise, params=params,
                                                                     activations=activations, image_size=224,
                                                                     layers=layers), f"paper of {name}")


def test_a_measured_row_doing_more_of_every_cost_bounds_an_estimate_from_above_and_one_doing_less_from_below():
    rows = [_row("big", 1.5, 4_000_000_000, 30_000_000, 25_000_000, 35_000_000, 190),
            _row("v2", 0.44, 300_000_000, 20_000_000, 3_500_000, 25_000_000, 200),
            _row("small", 0.2, 50_000_000, 5_000_000, 1_000_000, 4_000_000, 60),
            _row("v2", 0.2, 300_000_000, 20_000_000, 3_500_000, 25_000_000, 200, precision="w8a8")]
    tiny = CostFeatures(macs=2_000_000, depthwise_macs=0, params=280_000, activations=60_000, image_size=32, layers=57)
    bound = estimate.bounding_rows(tiny, rows, "w8a16")
    # the fastest row above it in every cost ("small"), none below; another precision's rows never count
    assert bound.high.latency_ms == 0.2 and bound.low is None
    assert bound.as_detail() == {"p50": [None, 0.2], "p90": [None, 0.4], "low_row": None,
                                 "high_row": "small w8a16 at 224 px, 0.2 ms (paper of small)"}
    # A row of another device standing in for the profile's may inform the fit, never a bound.
    stand_in = estimate.Reference("v2", "w8a16", 0.1, rows[1].features, "another phone", stand_in="its sibling")
    assert estimate.bounding_rows(tiny, [*rows, stand_in], "w8a16").high.latency_ms == 0.2
    # More layers than every row: fewer MACs may still be more dispatches, so no row is above it.
    assert estimate.bounding_rows(CostFeatures(2_000_000, 0, 280_000, 60_000, 32, layers=300), rows,
                                  "w8a16").high is None
    assert estimate.bounding_rows(CostFeatures(2_000_000, 0, 280_000, 60_000, 32), rows, "w8a16").as_detail() is None
    # Between the rows: "small" is below it in every cost, "big" above.
    middle = CostFeatures(macs=400_000_000, depthwise_macs=10_000_000, params=5_000_000, activations=20_000_000,
                          image_size=224, layers=100)
    bound = estimate.bounding_rows(middle, rows, "w8a16")
    assert (bound.low.model, bound.high.model) == ("small", "big")


def test_a_table_whose_own_rows_refute_monotonic_latency_bounds_nothing():
    rows = [_row("big", 0.9, 4_000_000_000, 30_000_000, 25_000_000, 35_000_000, 190),
            _row("small", 1.5, 50_000_000, 5_000_000, 1_000_000, 4_000_000, 60)]  # less work, slower
    tiny = CostFeatures(macs=2_000_000, depthwise_macs=0, params=280_000, activations=60_000, image_size=32, layers=57)
    bound = estimate.bounding_rows(tiny, rows, "w8a16")
    assert bound.as_detail() is None and bound.refuted.startswith("in 1 of the table's 1 w8a16 row pairs")
    # This host's ONNX INT8 table does refute it (MobileNetV3's hard-swish); the published phone tables do not.
    x86 = estimate.load_references(load_profile("x86-server-avx2").references_path())
    assert estimate.monotonic(x86, "int8")[1]
    for name in ("pixel-3-cpu", "android-midrange-cpu", "pixel-6-cpu", "iphone-15-pro-ane"):
        references = estimate.load_references(load_profile(name).references_path())
        for precision in {r.precision for r in references}:
            assert not estimate.monotonic(references, precision)[1], (name, precision)


def test_layers_kept_at_another_precision_take_the_bounds_away(tmp_path):
    profile = load_profile("pixel-3-cpu")
    tiny = CostFeatures(macs=2_000_000, depthwise_macs=0, params=280_000, activations=60_000, image_size=32, layers=57)
    whole = estimate.measure(tmp_path / "m.tflite", profile, tiny, "int8")
    assert whole.extra["bounds"]["p50"][1] is not None and whole.extra["order_of_magnitude"] is None
    assert estimate.measure(tmp_path / "m.tflite", profile, tiny, "int8", {"float": 0}).extra == whole.extra
    floats = estimate.measure(tmp_path / "m.tflite", profile, tiny, "int8", {"float": 2, "int16": 0})
    assert floats.extra["bounds"] is None and floats.extra["order_of_magnitude"] is None
    assert any("keeps 2 float layer(s)" in note for note in floats.notes)
    assert floats.latency_ms["p50"] == whole.latency_ms["p50"]  # the whole INT8 model's estimate, and it says so
    int16 = estimate.measure(tmp_path / "m.tflite", profile, tiny, "int8", {"int16": 3})
    assert int16.extra["bounds"] is None and "int16 layers" in int16.extra["order_of_magnitude"]
    assert any("keeps 3 int16 layer(s)" in note for note in int16.notes)


def test_an_order_of_magnitude_estimate_is_decided_by_a_row_that_bounds_it_and_only_then():
    from edgekiln.gates import budget_checks
    from edgekiln.targets.artifact import Artifact

    detail = {"order_of_magnitude": "3 reference row(s) of its precision, fewer than 6",
              "bounds": {"p50": [None, 0.44], "p90": [None, 0.88], "low_row": None, "high_row": "v2 w8a16 ..."}}
    artifact = Artifact(target="phone", format="coreml", file="m.mlpackage", profile="p",
                        budget={"p50_ms": 2.0, "p90_ms": 0.5}, latency_source="estimate",
                        latency_ms={"p50": 0.37, "p90": 0.48, "p50_interval": [0.1, 0.6]}, latency_detail=detail)
    [p50], [p90] = budget_checks("target phone", artifact)
    assert p50.passed and p50.rule == "bound" and p50.decided_on == 0.44
    assert "a measured row doing at least as much of every counted cost took 0.44 ms" in p50.message()
    assert p50.to_dict()["interval"] == [None, 0.44] and p50.to_dict()["status"] == "passed"
    # 0.88 ms bounds the p90 from above, over its 0.5 budget: undecided, and the reason says so
    assert "order-of-magnitude estimate" in p90.message() and "no slower than a measured row's 0.88 ms" in p90.message()
    # A row doing at most as much work, over the budget, fails it whatever the fit's quality.
    artifact.latency_detail = {**detail, "bounds": {"p50": [3.0, None], "p90": [3.0, None]}}
    artifact.budget = {"p50_ms": 2.0}
    [p50], _ = budget_checks("target phone", artifact)
    assert not p50.passed and p50.decided_on == 3.0 and "at most as much of every counted cost took 3 ms" in p50.message()
    # The estimate's own record after the fact: read back from the manifest, the same gate.
    from edgekiln.gates import gate_from_dict
    assert gate_from_dict(p50.to_dict()) == p50


def test_how_far_an_estimate_is_trusted_follows_its_rows_and_leave_one_out_error(tmp_path):
    assert estimate.order_of_magnitude(6, 24.9) is None
    assert "fewer than 6" in estimate.order_of_magnitude(5, 3.0)
    assert "median error 25%" in estimate.order_of_magnitude(22, 25.0)
    path = tmp_path / "refs.csv"
    path.write_text("model,precision,input_px,threads,latency_ms,source,macs,depthwise_macs,params,activations\n" + "".join(
        f"{r.model},{r.precision},224,1,{r.latency_ms!r},synthetic,{r.features.macs},{r.features.depthwise_macs},"
        f"{r.features.params},{r.features.activations}\n" for r in _synthetic(np.array([0.02, 0.3, 0.05, 0.4]), 8)))
    profile = load_profile("x86-server-avx2").model_copy(
        update={"estimate": load_profile("x86-server-avx2").estimate.model_copy(update={"references": str(path)})})
    [row] = estimate.error_table(profile)
    assert row["rows"] == 8 and row["loo_median_pct"] < 1e-6 and row["order_of_magnitude"] is None
    assert row["fixed_ms"] == pytest.approx(0.4, rel=1e-6)


@pytest.mark.parametrize("name", [p for p in shipped_profiles() if load_profile(p).estimate is not None])
def test_no_shipped_profile_estimates_a_tiny_model_below_a_runtime_call(name, tmp_path):
    """A 32 px model of a few hundred thousand MACs: every estimate at least 20 microseconds
    (onnxruntime's one-convolution probe takes 40 on this host), and a cited row behind each."""
    from edgekiln.targets import get_format

    profile = load_profile(name)
    tiny = CostFeatures(macs=900_000, depthwise_macs=90_000, params=580_000, activations=72_000, image_size=32,
                        layers=20)
    for precision in dict.fromkeys(get_format(profile.format).ENCODINGS.values()):
        try:
            calibrated = estimate.calibrate(profile, precision)
        except RunnerFailed:  # a precision the table cannot estimate says so; nothing to check
            continue
        assert calibrated.predict(tiny) >= 0.02, (name, precision)
    assert all(r.source for r in estimate.load_references(profile.references_path()))


def test_a_precision_with_few_rows_is_estimated_as_float_times_its_paired_ratio():
    truth = np.array([0.02, 0.3, 0.05, 0.4])
    floats = _synthetic(truth, 8)
    # Two int8 rows, each 0.7x its float pair: too few to fit their own model.
    int8 = [estimate.Reference(r.model, "int8", 0.7 * r.latency_ms, r.features, "synthetic") for r in floats[:2]]
    refs = floats + int8
    assert estimate.paired_ratio(refs, "int8") == (pytest.approx(0.7), 2) and estimate.by_ratio(refs, "int8")
    assert not estimate.by_ratio(refs, "float") and not estimate.by_ratio(floats + [
        estimate.Reference(r.model, "int8", r.latency_ms, r.features, "s") for r in floats], "int8")
    # Held out, an int8 row is predicted from the float rows of other models and the other pair's ratio.
    assert estimate.error_pct(estimate.leave_one_out(refs, "int8")) < 1e-6


def test_phone_int8_estimates_keep_the_published_int8_speed_up_at_small_inputs(tmp_path):
    # Pixel 3 (4 threads) runs MobileNetV1 INT8 at 0.49-0.67x float (TFLite hosted models,
    # 128-224 px; 17 pairs, mean 0.607). Two int8 rows alone once fitted a model that put a 32 px
    # INT8 MobileNetV3-Small at 4.9x float: the ratio holds at every input size.
    torch.manual_seed(0)
    import timm
    profile = load_profile("pixel-3-cpu")
    for size in (224, 32):
        features = cost_features(timm.create_model("mobilenetv3_small_100"), size)
        int8, fp = (estimate.measure(tmp_path / "m.tflite", profile, features, p) for p in ("int8", "float"))
        assert int8.latency_ms["p50"] / fp.latency_ms["p50"] == pytest.approx(0.607, abs=0.01)
        assert "paired reference" in int8.notes[0] and int8.extra["error_pct_leave_one_out"] < 15


def test_the_estimate_runner_refuses_what_it_cannot_estimate(tmp_path):
    profile = load_profile("x86-server-avx2").model_copy()
    with pytest.raises(RunnerFailed, match="carries no edgekiln cost features"):
        estimate.measure(tmp_path / "foreign.onnx", profile, None, "int8")
    features = CostFeatures(macs=10, depthwise_macs=0, params=10, activations=10, image_size=8, layers=3)
    with pytest.raises(RunnerFailed, match="no w8a16 reference measurements"):
        estimate.measure(tmp_path / "m.onnx", profile, features, "w8a16")
    older = CostFeatures(macs=10, depthwise_macs=0, params=10, activations=10, image_size=8)  # no layer count
    with pytest.raises(RunnerFailed, match="written before edgekiln counted layers"):
        estimate.measure(tmp_path / "m.onnx", profile, older, "float")
    with pytest.raises(RunnerFailed, match="has no \\[estimate\\] section"):
        estimate.measure(tmp_path / "m.tflite", load_profile("raspberry-pi-5-cpu"), features, "int8")


def test_core_ml_accuracy_comes_from_the_mac_when_the_profile_runs_over_ssh(tmp_path, monkeypatch):
    from edgekiln.stages.export import work as export
    from edgekiln.targets import evaluate, get_format
    from edgekiln.targets import target as targets

    coreml_format = get_format("coreml")

    target = targets.TargetConfig(name="mac", profile="mac-coreml", budget={"p50_ms": 3.0})
    profile = target.resolve()
    val_y = np.array([0, 1, 2, 1])
    logits = np.eye(3, dtype=np.float32)[[0, 1, 2, 2]]  # the Mac's Core ML gets 3 of 4 right
    calls = []

    def on_the_mac(path, prof, images):
        calls.append((path, prof.name, images.shape))
        return None, logits

    monkeypatch.setattr(evaluate.ssh_runner, "run_remote", on_the_mac)
    record = export._runtime_accuracy(coreml_format, target, profile, tmp_path / "model.mlpackage",
                                      np.zeros((4, 3, 8, 8), np.float32), val_y, np.array([0, 1, 2, 1]), None, None)
    assert record == {"accuracy_source": "runtime", "accuracy": 75.0, "agreement": 75.0}
    from edgekiln.errors import InputError
    from edgekiln.targets.errors import DeviceUnreachable

    def mac_asleep(path, prof, images):
        raise DeviceUnreachable("ssh 127.0.0.1: Connection refused")

    monkeypatch.setattr(evaluate.ssh_runner, "run_remote", mac_asleep)
    with pytest.raises(InputError, match="target mac: profile 'mac-coreml' device cannot be reached: .*refused"):
        export._runtime_accuracy(coreml_format, target, profile, tmp_path / "model.mlpackage",
                                 np.zeros((4, 3, 8, 8), np.float32), val_y, val_y, None, None)
    assert calls == [(tmp_path / "model.mlpackage", "mac-coreml", (4, 3, 8, 8))]
    keys = targets.budget_keys(target, profile)
    assert keys["p50_ms"] == "targets.mac.budget.p50_ms" and keys["size_mb"] == "budget.size_mb of profile mac-coreml"


def test_a_profile_floor_needs_its_source_and_no_estimate_of_it_is_below(tmp_path):
    import shutil

    shutil.copy(load_profile("pixel-3-cpu").references_path(), tmp_path / "refs.csv")
    body = ('name = "floored"\ndevice = "a phone"\nformat = "tflite"\n[runner]\nkind = "estimate"\n'
            '[estimate]\nreferences = "refs.csv"\nfloor_ms = 0.5\n')
    (tmp_path / "unsourced.toml").write_text(body)
    with pytest.raises(ProfileError, match="floor_ms needs estimate.floor_source"):
        load_profile(str(tmp_path / "unsourced.toml"))
    (tmp_path / "floored.toml").write_text(body + 'floor_source = "an empty model on this phone, measured"\n')
    tiny = CostFeatures(macs=100_000, depthwise_macs=10_000, params=5_000, activations=5_000, image_size=16, layers=5)
    result = estimate.measure(tmp_path / "m.tflite", load_profile(str(tmp_path / "floored.toml")), tiny, "int8")
    assert result.extra["ratio"] < 1 and result.latency_ms["p50"] >= 0.5 and result.extra["fixed_ms"] == 0.5
    assert "extrapolated: 0.1 MMACs outside" in " ".join(result.notes)


def test_a_host_measurement_names_the_cpu_and_whether_it_has_vnni():
    from edgekiln.targets.runners.host import host_device, host_isa

    assert host_isa({"sse4_2", "avx2", "fma"}) == ["AVX2", "no VNNI"]
    assert host_isa({"avx2", "avx512f", "avx512_vnni"}) == ["AVX2", "AVX-512", "AVX-512 VNNI"]
    assert host_isa({"avx2", "avx_vnni"}) == ["AVX2", "AVX-VNNI"]
    assert host_isa(set()) == []  # not x86, or not Linux: nothing claimed
    device = host_device()
    assert device.startswith("this host (") and all(label in device for label in host_isa())
