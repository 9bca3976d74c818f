"""One tiny pipeline, end to end, through the CLI: artifacts in their runtimes, manifest,
cache re-use, targets-only re-runs, resume after a killed stage, gate failure, bad input."""

import hashlib
import json
import shutil
from pathlib import Path

import junitparser
import numpy as np
import pytest
import torch
from tiny_pipeline import EXECUTORCH_TARGET, invoke, write_config  # the shared run: conftest's `run`
from typer.testing import CliRunner

from edgekiln.data.dataset import DataConfig, load_dataset, to_input
from edgekiln.interfaces.cli import app
from edgekiln.stages.prune import work as prune_stage
from edgekiln.targets import encodings, get_format
from edgekiln.system.files import sha256


def test_pipeline_passes_and_writes_every_artifact(run):
    root, result, manifest = run
    assert result.exit_code == 0, result.output
    assert manifest["passed"] is True and manifest["error"] is None
    assert [s["name"] for s in manifest["stages"]] == ["teacher", "distill", "prune", "quantize", "export"]
    for name in ("model.onnx", "model.tflite", "model.mlpackage", "report.png", "tradeoff.png", "report.html",
                 "MODEL_CARD.md"):
        assert (root / "out" / name).exists(), name
    assert "android" in result.output and "PASSED" in result.output


def test_manifest_fields(run):
    _, _, manifest = run
    for key in ("edgekiln_version", "config", "config_sha256", "tool_versions", "compute", "teacher", "stages",
                "artifacts", "preprocessing", "labels"):
        assert key in manifest, key
    assert manifest["compute"]["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert manifest["labels"] == [str(i) for i in range(10)]
    assert manifest["preprocessing"]["image_size"] == 32 and manifest["preprocessing"]["layout"] == "NCHW"
    teacher = manifest["teacher"]
    assert [c["name"] for c in teacher["candidates"]] == ["resnet10t", "mobilenetv3_small_050"]
    assert sum(c["chosen"] for c in teacher["candidates"]) == 1
    for c in teacher["candidates"]:
        assert c["why"] and c["host_latency_ms"] > 0 and c["input_size"] == 32 and c["macs"] > 0
    assert teacher["accuracy"] == max(c["accuracy"] for c in teacher["candidates"])
    assert teacher["accuracy"] > 80  # far above chance (10%): the teacher really learned
    for stage in manifest["stages"]:
        assert 0 <= stage["accuracy"] <= 100 and stage["params"] > 0 and stage["macs"] > 0
    prune = next(s for s in manifest["stages"] if s["name"] == "prune")
    distill = next(s for s in manifest["stages"] if s["name"] == "distill")
    assert prune["macs"] <= 0.7 * distill["macs"]


def test_every_stage_and_artifact_is_graded_on_the_held_out_test_split(run):
    from sklearn.datasets import load_digits

    root, _, manifest = run
    splits = json.loads((root / "out" / "splits.json").read_text())
    assert manifest["splits"]["sha256"] == sha256(root / "out" / "splits.json")
    assert manifest["splits"]["release_gates_on"] == "test" and manifest["splits"]["decisions_on"] == "val"
    val, test = splits["val"]["members"], splits["test"]["members"]
    assert not set(val) & set(test) and len(test) == manifest["splits"]["test"] == 360
    # the listed test members are exactly the images the artifacts were graded on
    data = load_dataset(DataConfig(image_size=32, seed=0))
    assert np.array_equal(load_digits().target[test], data.test_y.numpy())
    for record in manifest["stages"] + manifest["artifacts"]:
        assert 0 <= record["test_accuracy"] <= 100
    for record in manifest["stages"] + manifest["artifacts"]:
        low, high = record["test_accuracy_ci"]
        assert low <= record["test_accuracy"] <= high
        low, high = record["drop_ci"]
        assert low <= record["test_drop"] <= high
    teacher = manifest["stages"][0]
    assert teacher["test_drop"] == 0 and manifest["teacher"]["test_accuracy"] == teacher["test_accuracy"]
    pre = manifest["preprocessing"]
    for artifact in manifest["artifacts"]:
        assert "test_top1" not in artifact  # per-image predictions stay in the cache
        assert artifact["test_accuracy_source"] == artifact["accuracy_source"]
        if artifact["format"] != "coreml":
            predicted = get_format(artifact["format"]).predict(root / "out" / artifact["path"],
                                                               to_input(data.test_x, pre["mean"], pre["std"]).numpy())
            hits = predicted.argmax(1) == data.test_y.numpy()
            assert artifact["test_accuracy"] == pytest.approx(hits.mean() * 100)
            assert artifact["test_drop"] == pytest.approx(manifest["teacher"]["test_accuracy"] - hits.mean() * 100)
    release = [g for g in manifest["gates"] if g["subject_type"] == "target" and g["kind"] == "accuracy"]
    assert release and all(g["split"] == "test" and g["drop_interval"] for g in release)
    assert all(g["value"] == pytest.approx(g["reference"] - g["accuracy"]) and g["unit"] == "points" for g in release)
    assert all(g["split"] == "val" for g in manifest["gates"] if g["subject_type"] == "stage")
    assert manifest["student"]["name"] == "mobilenetv3_small_050"
    assert manifest["student"]["candidates"][0]["why"] == "the only candidate"


def test_artifact_hashes_and_sizes_match_files(run):
    root, _, manifest = run
    for artifact in manifest["artifacts"]:
        path = root / "out" / artifact["path"]
        if path.is_file():
            assert artifact["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
            assert artifact["size_bytes"] == path.stat().st_size
        else:
            assert artifact["size_bytes"] == sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            copy = root / "tampered" / path.name
            shutil.copytree(path, copy)
            assert sha256(copy) == artifact["sha256"]
            weights = next(copy.rglob("weight.bin"))
            weights.write_bytes(weights.read_bytes() + b"\0")
            assert sha256(copy) != artifact["sha256"]


def test_artifacts_run_in_their_runtimes_with_the_recorded_accuracy(run):
    root, _, manifest = run
    data = load_dataset(DataConfig(image_size=32, seed=0))
    pre = manifest["preprocessing"]
    val_x = to_input(data.val_x, pre["mean"], pre["std"]).numpy()
    for artifact in manifest["artifacts"]:
        fmt = get_format(artifact["format"])
        path = root / "out" / artifact["path"]
        metadata = fmt.read_metadata(path)
        assert json.loads(metadata["labels"]) == manifest["labels"]
        assert json.loads(metadata["preprocessing"]) == pre
        assert json.loads(metadata["edgekiln_cost"]) == artifact["cost_features"]
        if artifact["format"] == "coreml":
            assert artifact["accuracy_source"] == "proxy"
            assert get_format("coreml").check(path, (1, 3, 32, 32))["int8_weight_ops"] > 0
            continue
        assert artifact["accuracy_source"] == "runtime"
        logits = fmt.predict(path, val_x)
        accuracy = float((logits.argmax(1) == data.val_y.numpy()).mean() * 100)
        assert accuracy == pytest.approx(artifact["accuracy"], abs=1e-6)
        assert accuracy > 60


def test_mediapipe_classifies_the_test_split_with_every_tflite_artifact_as_the_manifest_says(run):
    """A real client: MediaPipe Tasks' ImageClassifier loads the TFLite artifact with no code of
    ours in between (its labels and normalization from the standard metadata) and classifies
    the held-out test images as edgekiln's own runtime measurement did."""
    mp = pytest.importorskip("mediapipe", reason="MediaPipe Tasks is in the test extra (pip install -e '.[test]')")
    from mediapipe.tasks.python import BaseOptions, vision

    root, _, manifest = run
    data = load_dataset(DataConfig(image_size=32, seed=0))
    pre = manifest["preprocessing"]
    frames = data.test_x.permute(0, 2, 3, 1).numpy()  # what a camera gives: NHWC uint8 RGB
    tflites = [a for a in manifest["artifacts"] if a["format"] == "tflite"]
    assert tflites
    for artifact in tflites:
        path = root / "out" / artifact["path"]
        options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(path)), max_results=1)
        with vision.ImageClassifier.create_from_options(options) as classifier:
            theirs = np.array([manifest["labels"].index(classifier.classify(
                mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame)))
                .classifications[0].categories[0].category_name) for frame in frames])
        ours = get_format("tflite").predict(path, to_input(data.test_x, pre["mean"], pre["std"]).numpy()).argmax(1)
        assert (theirs == ours).mean() >= 0.99
        assert abs((theirs == data.test_y.numpy()).mean() * 100 - artifact["test_accuracy"]) <= 1.0


def test_every_artifact_is_measured_on_its_profile_and_says_how(run):
    _, result, manifest = run
    artifacts = {a["target"]: a for a in manifest["artifacts"]}
    server, android, iphone = artifacts["server"], artifacts["android"], artifacts["iphone"]
    assert server["profile"] == "x86-server-avx2" and server["latency_source"] == "host"
    assert server["threads"] == 2 and server["latency_ms"]["runs"] == 100
    assert 0 < server["latency_ms"]["p50"] <= server["latency_ms"]["p90"] and server["peak_memory_mb"] >= 0
    # No phone on adb here: the target allows an estimate, and the record says it is one.
    assert android["profile"] == "pixel-3-cpu" and android["latency_source"] == "estimate"
    assert "could not reach the device" in android["latency_notes"][0]
    assert android["latency_detail"]["error_pct_leave_one_out"] > 0
    # A tiny model is estimated at no less than the runtime's fixed cost per inference.
    assert iphone["latency_source"] == "estimate" and iphone["latency_ms"]["p50"] >= iphone["latency_detail"]["fixed_ms"] > 0.05
    # 17 cited INT8 rows on the Pixel 3 (4 threads) decide its budgets: p50 and p90 on the
    # estimate's upper end, peak memory as measured in this host's TFLite runtime. Three rows
    # on the iPhone: an order of magnitude, which decides only where a published row bounds it.
    assert not android["latency_detail"]["order_of_magnitude"] and not android["budgets_not_checked"]
    assert android["latency_ms"]["p90_interval"][1] >= android["latency_ms"]["p50_interval"][1]
    assert android["peak_memory_mb"] > 0 and android["latency_detail"]["peak_memory_source"] == "this host's runtime"
    assert iphone["latency_detail"]["order_of_magnitude"]
    assert iphone["latency_detail"]["bounds"]["high_row"].startswith("mobilenetv2_100 w8a16 at 224 px, 0.44 ms")
    [p90_line] = iphone["budgets_not_checked"]
    assert p90_line.startswith("targets.iphone.budget.p90_ms = 0.5 not checked") and "order-of-magnitude" in p90_line
    assert "no slower than a measured row's 0.88 ms" in p90_line
    budget_gates = [g for g in manifest["gates"] if g["kind"] != "accuracy" and g["status"] != "not_checked"]
    assert {(g["subject"], g["kind"], g["metric"], g["unit"]) for g in budget_gates} >= {
        ("server", "latency", "p50_ms", "ms"), ("server", "latency", "p90_ms", "ms"),
        ("server", "memory", "peak_memory_mb", "MB"), ("server", "size", "size_mb", "MB"),
        ("android", "latency", "p50_ms", "ms"), ("android", "latency", "p90_ms", "ms"),
        ("android", "memory", "peak_memory_mb", "MB"), ("android", "size", "size_mb", "MB"),
        ("iphone", "latency", "p50_ms", "ms"), ("iphone", "size", "size_mb", "MB")}
    [iphone_p50] = [g for g in budget_gates if g["subject"] == "iphone" and g["metric"] == "p50_ms"]
    assert iphone_p50["rule"] == "bound" and iphone_p50["decided_on"] == 0.44 and iphone_p50["interval"] == [None, 0.44]
    estimated = {(g["metric"], g["source"]) for g in budget_gates if g["subject"] == "android"}
    assert {("p50_ms", "estimate"), ("p90_ms", "estimate"), ("peak_memory_mb", "this host's runtime")} <= estimated
    assert all(g["status"] == "passed" and g["value"] <= g["limit"] for g in budget_gates)
    # the budgets the estimates could not decide are records too, and the same list as the prose
    not_checked = [g for g in manifest["gates"] if g["status"] == "not_checked"]
    assert sorted(f"target {g['subject']}: {g['budget_key']}" for g in not_checked) == sorted(
        line.split(" = ")[0] for line in manifest["unchecked"])
    assert all(g["subject"] == "iphone" and g["why"] for g in not_checked) and len(not_checked) == 1
    assert "estimate" in result.output and "host" in result.output


def test_the_precheck_ran_first_and_is_cached_on_rerun(run):
    root, _, manifest = run
    assert manifest["precheck"]["cached"] is False
    assert sorted(r["format"] for r in manifest["precheck"]["targets"]) == ["coreml", "onnx", "tflite"]


def test_rerun_reuses_every_stage(run):
    root, _, first = run
    result = invoke(root / "tiny.toml", root / "out", root / "cache")
    assert result.exit_code == 0, result.output
    manifest = json.loads((root / "out" / "manifest.json").read_text())
    assert all(s["cached"] for s in manifest["stages"]) and manifest["precheck"]["cached"] is True
    assert [a["sha256"] for a in manifest["artifacts"]] == [a["sha256"] for a in first["artifacts"]]


@pytest.mark.slow  # 137 s; test_executorch.py converts, runs and times .pte files in the default suite
def test_executorch_goes_through_every_stage_scored_and_timed_in_its_runtime(run):
    """The fourth format on the shared pipeline: every stage re-used, the .pte built, graded
    on val and test in ExecuTorch's runtime, timed on this host, its metadata inside it, and
    re-verified by `edgekiln check`."""
    root, _, first = run
    work = root / "executorch"
    work.mkdir()
    result = invoke(write_config(work, targets=EXECUTORCH_TARGET), work / "out", root / "cache")
    assert result.exit_code == 0, result.output
    manifest = json.loads((work / "out" / "manifest.json").read_text())
    assert {s["name"]: s["cached"] for s in manifest["stages"]} == {
        "teacher": True, "distill": True, "prune": True, "quantize": True, "export": False}
    [artifact] = manifest["artifacts"]
    assert artifact["path"] == "model.pte" and artifact["encoding"] == "int8"
    assert artifact["accuracy_source"] == artifact["test_accuracy_source"] == "runtime"
    assert artifact["latency_source"] == "host" and artifact["latency_ms"]["p50"] > 0
    data = load_dataset(DataConfig(image_size=32, seed=0))
    pre = manifest["preprocessing"]
    # an app that knows only the file: the .pte's own `interface` says how to scale the pixels
    feed = json.loads(get_format("executorch").read_metadata(work / "out" / "model.pte")["interface"])["input"]
    assert feed["layout"] == "NCHW" and feed["dtype"] == "float32"
    x = data.test_x.numpy().astype(np.float32) / 255.0
    x = (x - np.array(feed["mean"], np.float32)[None, :, None, None]) / np.array(feed["std"], np.float32)[None, :, None, None]
    predicted = get_format("executorch").predict(work / "out" / "model.pte", np.ascontiguousarray(x))
    assert artifact["test_accuracy"] == pytest.approx((predicted.argmax(1) == data.test_y.numpy()).mean() * 100)
    assert abs(artifact["test_accuracy"] - next(a for a in first["artifacts"] if a["target"] == "server")["test_accuracy"]) < 5
    metadata = get_format("executorch").read_metadata(work / "out" / "model.pte")
    assert json.loads(metadata["labels"]) == manifest["labels"] and json.loads(metadata["preprocessing"]) == pre
    assert [r["format"] for r in manifest["precheck"]["targets"]] == ["executorch"]
    checked = CliRunner().invoke(app, ["check", str(work / "out")])
    assert checked.exit_code == 0, checked.output


def test_a_changed_quantize_budget_reruns_quantize_and_export_only(profileless_run):
    work, result, manifest = profileless_run
    assert result.exit_code == 0, result.output
    assert {s["name"]: s["cached"] for s in manifest["stages"]} == {
        "teacher": True, "distill": True, "prune": True, "quantize": False, "export": False}
    assert [a["path"] for a in manifest["artifacts"]] == ["server.onnx", "model.mlpackage", "model.tflite"]


def test_a_target_without_a_profile_or_a_runtime_passes_and_every_report_says_its_latency_was_not_measured(
        profileless_run):
    work, result, manifest = profileless_run
    out = work / "out"
    assert result.exit_code == 0 and "PASSED" in result.output, result.output
    ios = next(a for a in manifest["artifacts"] if a["target"] == "ios")
    assert ios["latency_ms"] is None and ios["latency_source"] is None and "report_errors" not in manifest
    why = "latency not measured: the host runner cannot time coreml here: Core ML predictions need macOS"
    assert why in (out / "report.html").read_text() and why in (out / "MODEL_CARD.md").read_text()
    assert "ios: latency not measured" in result.output
    for target in ("server", "android"):  # the host profiles measure on this machine, and say so
        artifact = next(a for a in manifest["artifacts"] if a["target"] == target)
        assert artifact["latency_source"] == "host" and artifact["latency_ms"]["p50"] > 0


def test_encoding_auto_ships_the_smallest_candidate_as_fast_as_the_fastest_and_records_each(run):
    root, _, first = run
    work = root / "auto"
    work.mkdir()
    targets = '[[targets]]\nname = "server"\nprofile = "x86-server-avx2"\nencoding = "auto"\n'
    result = invoke(write_config(work, targets=targets), work / "out", root / "cache")
    assert result.exit_code == 0, result.output
    manifest = json.loads((work / "out" / "manifest.json").read_text())
    assert {s["name"]: s["cached"] for s in manifest["stages"]} == {  # only the targets changed
        "teacher": True, "distill": True, "prune": True, "quantize": True, "export": False}
    artifact = manifest["artifacts"][0]
    choice = artifact["encoding_choice"]
    candidates = {c["encoding"]: c for c in choice["candidates"]}
    assert list(candidates) == ["fp32", "fp16", "int8", "dynamic"] and choice["asked"] == "auto"
    for c in candidates.values():  # every candidate measured in onnxruntime and on this host
        assert c["accuracy_source"] == "runtime" and c["latency_source"] == "host" and c["p50_ms"] > 0
    assert candidates["int8"]["size_bytes"] < candidates["fp16"]["size_bytes"] < candidates["fp32"]["size_bytes"]
    within = [c for c in candidates.values() if not c["over_budget"]]
    timing = choice["timing"]  # those within budget timed again, interleaved in one process
    assert timing["interleaved"] and timing["runner"] == "host" and timing["rounds"] == 15
    assert all(len(c["round_p50_ms"]) == 15 and c["median_ms"] > 0 for c in within)
    fastest = min(within, key=lambda c: c["median_ms"])  # the smallest as fast within the noise ships
    ties = [c for c in within if (lambda r, noise: r <= 1 + max(0.02, noise))(
        *encodings.paired(c["round_p50_ms"], fastest["round_p50_ms"]))]
    assert artifact["encoding"] == choice["chosen"] == min(ties, key=lambda c: c["size_bytes"])["encoding"]
    assert artifact["size_bytes"] == candidates[artifact["encoding"]]["size_bytes"]
    assert "median of 15 interleaved rounds" in choice["why"]
    # only the winner is published, under the target's artifact name, and says what it is
    out = work / "out"
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".onnx") == ["model.onnx"]
    assert get_format("onnx").read_metadata(out / "model.onnx")["edgekiln_encoding"] == artifact["encoding"]
    int8_run = next(a for a in first["artifacts"] if a["target"] == "server")
    assert int8_run["encoding"] == "int8" and "encoding_choice" not in int8_run


@pytest.mark.slow  # 68 s; test_qat_state.py trains QAT, restores its state and exports its TFLite in the default suite
def test_qat_reuses_the_upstream_stages_and_writes_int8_artifacts(run):
    root, _, first = run
    work = root / "qat"
    work.mkdir()
    # ONNX and Core ML: the TFLite export of QAT weights (the slowest conversion) is
    # test_qat_state.py's, which checks it uses the QAT ranges.
    config = write_config(work, targets='[[targets]]\nname = "server"\nprofile = "x86-server-avx2"\n\n'
                                        '[[targets]]\nname = "iphone"\nprofile = "iphone-15-pro-ane"\n')
    config.write_text(config.read_text().replace("[quantize]\n", '[quantize]\nmode = "qat"\nepochs = 1\n'))
    result = invoke(config, work / "out", root / "cache")
    assert result.exit_code == 0, result.output
    manifest = json.loads((work / "out" / "manifest.json").read_text())
    assert {s["name"]: s["cached"] for s in manifest["stages"]} == {
        "teacher": True, "distill": True, "prune": True, "quantize": False, "export": False}
    quantize = manifest["quantize"]
    assert quantize["mode"] == "qat" and quantize["qat"]["epochs"] == 1
    assert quantize["ptq_accuracy"] == first["quantize"]["ptq_accuracy"]  # same model, same sample
    quantize_stage = next(s for s in manifest["stages"] if s["name"] == "quantize")
    assert quantize_stage["accuracy"] == quantize["qat"]["accuracy"]
    # The QAT-tuned weights differ from the PTQ run's, and every artifact stores INT8 weights:
    # well under the 4 bytes per parameter of float32.
    float_bytes = 4 * quantize_stage["params"]
    by_target = {a["target"]: a for a in manifest["artifacts"]}
    for target in ("server", "iphone"):
        assert by_target[target]["sha256"] != next(a for a in first["artifacts"] if a["target"] == target)["sha256"]
        assert by_target[target]["size_bytes"] < 0.5 * float_bytes, (target, by_target[target]["size_bytes"])
    # ONNX is QAT's own graph (its trained ranges), unless this host's kernels want 7-bit weights (no VNNI)
    onnx_record = by_target["server"]["quantization"]
    assert onnx_record["calibrator"].startswith("QAT") or "7 bits (reduce_range)" in onnx_record["qat_ranges"]


def test_a_plain_int8_simulation_that_misses_the_budget_keeps_layers_float_and_the_run_passes(run, profileless_run):
    """The quantize gate is judged after the mixed-precision search: the profile-less run's
    budget.max_drop.quantize is half what the plain INT8 simulation lost (it stopped the run
    at quantize before), and keeping layers in float meets it. The float layers go on to the
    ONNX and TFLite artifacts; Core ML, which cannot keep any, ships plain INT8 weights and
    is judged on them."""
    _, _, first = run
    _, result, manifest = profileless_run
    assert result.exit_code == 0, result.output
    prune = next(s for s in first["stages"] if s["name"] == "prune")["accuracy"]
    budget = manifest["config"]["budget"]["max_drop"]["quantize"]
    assert prune - first["quantize"]["ptq_accuracy"] > budget  # the plain simulation misses it
    mixed = manifest["quantize"]["mixed_precision"]
    assert mixed["applied"] and mixed["float_layers"] and "points below prune" in mixed["breach"]
    quantize = next(s for s in manifest["stages"] if s["name"] == "quantize")
    assert quantize["passed"] and prune - quantize["accuracy"] <= budget + 1e-6
    by_target = {a["target"]: a for a in manifest["artifacts"]}
    assert by_target["server"]["quantization"]["float_layers"] == mixed["float_layers"]
    assert set(mixed["float_layers"]) <= set(by_target["android"]["quantization"]["float_layers"])
    assert by_target["ios"]["quantization"]["float_layers"] == [] and by_target["ios"]["passed"]
    # every layer's INT8 SQNR, lowest first, the layers kept in float marked
    layers = manifest["quantize"]["layers"]
    assert [r["sqnr_db"] for r in layers] == sorted(r["sqnr_db"] for r in layers) and len(layers) > 5
    assert {r["layer"] for r in layers if r["in_float"]} == set(mixed["float_layers"])
    html = (profileless_run[0] / "out" / "report.html").read_text()
    assert 'id="layer-sqnr-table"' in html and "(kept in float)" in html
    # export kept more layers in float for a target, on the quantize stage's ranking: not ranked again
    assert "layers by sensitivity to INT8" not in result.output


@pytest.mark.slow  # slow: test_faults.py's signal and kill tests resume a stopped run in the default suite
def test_a_killed_stage_leaves_no_cache_entry_and_the_next_run_resumes(run, monkeypatch):
    root, _, _ = run
    work = root / "killed"
    work.mkdir()
    config = write_config(work, extra="")
    config.write_text(config.read_text().replace("finetune_epochs = 2", "finetune_epochs = 3"))

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # like Ctrl-C in the middle of pruning

    monkeypatch.setattr(prune_stage, "prune_until", killed)
    with pytest.raises(KeyboardInterrupt):
        from edgekiln.interfaces import api

        api.run(config, work / "out", root / "cache")
    assert list((root / "cache" / ".tmp").iterdir()) == []
    assert [p.name for p in work.iterdir()] == ["tiny.toml"]  # nothing published, no staging folder left
    monkeypatch.undo()
    result = invoke(config, work / "out", root / "cache")
    assert result.exit_code == 0, result.output
    stages = json.loads((work / "out" / "manifest.json").read_text())["stages"]
    assert {s["name"]: s["cached"] for s in stages} == {
        "teacher": True, "distill": True, "prune": False, "quantize": False, "export": False}


def test_unmeetable_budget_exits_1_names_the_stage_and_writes_a_manifest(run):
    root, _, _ = run
    work = root / "strict"
    work.mkdir()
    config = write_config(work, extra="\n[budget.max_drop]\ndistill = 0.0\n")
    config.write_text(config.read_text().replace("max_drop_total = 60.0", "max_drop_total = 0.0"))
    result = invoke(config, work / "out", root / "cache", "--junit", work / "run.xml")
    assert result.exit_code == 1, result.output
    assert "gate FAILED: stage distill" in result.output and "budget.max_drop.distill = 0" in result.output
    manifest = json.loads((work / "out" / "manifest.json").read_text())
    assert manifest["passed"] is False
    assert [s["name"] for s in manifest["stages"]] == ["teacher", "distill"]
    assert [g["status"] for g in manifest["gates"] if g["subject"] == "distill"] == ["failed", "failed"]
    # the JUnit file: both distill gates failed with their messages; what was never judged is skipped
    cases = {(c.classname, c.name): c.result for c in next(iter(junitparser.JUnitXml.fromfile(str(work / "run.xml"))))}
    failed = cases[("edgekiln.run.stage.distill", "budget.max_drop.distill")]
    assert type(failed[0]).__name__ == "Failure" and "gate FAILED: stage distill" in failed[0].message
    for skipped in (("edgekiln.run.stage.prune", "budget.max_drop_total"), ("edgekiln.run.target.server", "artifact")):
        assert type(cases[skipped][0]).__name__ == "Skipped" and "an earlier gate failed" in cases[skipped][0].message


def test_bad_config_and_bad_input_exit_2(tmp_path):
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace("macs_ratio", "macs_ration"))
    result = invoke(config, tmp_path / "out", tmp_path / "cache")
    assert result.exit_code == 2 and "prune.macs_ration = " in result.stderr and "unknown key" in result.stderr
    assert not (tmp_path / "out").exists()

    config = write_config(tmp_path)
    config.write_text(config.read_text().replace('"resnet10t"', '"resnet_does_not_exist"'))
    result = invoke(config, tmp_path / "out", tmp_path / "cache")
    assert result.exit_code == 2
    assert "teacher.candidates[0]: unknown timm architecture 'resnet_does_not_exist'" in result.output
    assert not (tmp_path / "cache").exists()  # failed before any work


def test_a_crash_inside_a_stage_exits_3_not_1_and_records_the_error(run, monkeypatch):
    root, _, _ = run
    work = root / "crash"
    work.mkdir()
    config = write_config(work)
    config.write_text(config.read_text().replace("calibration_samples = 32", "calibration_samples = 33"))

    def broken(*args, **kwargs):
        raise RuntimeError("simulated bug")

    from edgekiln.targets.formats.tflite import pt2e

    monkeypatch.setattr(pt2e, "simulate", broken)
    result = invoke(config, work / "out", root / "cache")
    assert result.exit_code == 3, result.output
    manifest = json.loads((work / "out" / "manifest.json").read_text())
    assert manifest["passed"] is False and "simulated bug" in manifest["error"]
    assert [s["name"] for s in manifest["stages"]] == ["teacher", "distill", "prune"]


def test_a_report_that_cannot_be_written_keeps_the_run_records_it_and_names_it(profileless_run, monkeypatch,
                                                                                 tmp_path):
    """A bug in the report step: exit 3 naming the report, the others written, the artifacts
    and the manifest kept with the failure recorded, JUnit carrying it. A full disk while
    drawing: the file it could not write is named, and the run is not whole, so its
    manifest says passed: false; when even that manifest cannot be written, nothing is
    published and --out keeps what it held (exit 2)."""
    import errno

    from edgekiln.release import html_report, plots

    work, _, first = profileless_run
    config = work / "tiny.toml"
    out = tmp_path / "out"

    def bug(*args, **kwargs):
        raise TypeError("simulated template bug")

    def full_disk(manifest, directory):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(html_report, "render", bug)
    monkeypatch.setattr(plots, "draw", full_disk)
    result = invoke(config, out, work.parent / "cache", "--junit", tmp_path / "run.xml")
    assert result.exit_code == 3, result.output
    flat = " ".join(result.stderr.split())  # the console wraps long lines
    assert "report.html was not written: a bug in edgekiln's report step: TypeError: simulated template bug" in flat
    assert f"report.png and tradeoff.png was not written: cannot write {out / 'report.png'}: No space left on " \
           "device (" in flat and "free there)" in flat
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["passed"] is False and manifest["error"].startswith("reports not written: cannot write")
    assert set(manifest["report_errors"]) == {"report.html", "report.png and tradeoff.png"}
    assert (out / "MODEL_CARD.md").is_file() and not (out / "report.html").exists()
    assert [a["sha256"] for a in manifest["artifacts"]] == [a["sha256"] for a in first["artifacts"]]
    errors = [c for suite in junitparser.JUnitXml.fromfile(str(tmp_path / "run.xml")) for c in suite
              if c.result and isinstance(c.result[0], junitparser.Error)]
    assert sorted(c.name for c in errors) == ["report.html", "report.png and tradeoff.png", "run"]

    monkeypatch.undo()
    before = (out / "manifest.json").read_text()
    from edgekiln.engine import manifest as manifest_module

    def manifest_refused(directory, record):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(plots, "draw", full_disk)
    monkeypatch.setattr(manifest_module, "write_manifest", manifest_refused)
    result = invoke(config, out, work.parent / "cache")
    assert result.exit_code == 2, result.output
    assert "nothing was published" in " ".join(result.stderr.split())
    assert (out / "manifest.json").read_text() == before  # the earlier run's, whole
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]

    monkeypatch.undo()
    monkeypatch.setattr(plots, "draw", full_disk)
    result = CliRunner().invoke(app, ["report", str(out)])
    assert result.exit_code == 2, result.output
    assert "No space left on device" in " ".join(result.stderr.split()) and (out / "report.html").is_file()


def test_a_manifest_its_own_schema_refuses_is_a_bug_that_keeps_the_run(profileless_run, monkeypatch, tmp_path):
    """A stage that writes a figure of the wrong type into its manifest section: the run's
    artifacts and manifest stand, no report is rendered from it, and exit 3 names the field
    (a bug in edgekiln, not bad input)."""
    from edgekiln.engine import manifest as manifest_module

    work, _, first = profileless_run
    sections = manifest_module.stage_sections

    def wrong_type(outcome):
        out = sections(outcome)
        out["prune"] = {**out["prune"], "stopped": 5}  # text in its record
        return out

    monkeypatch.delenv("EDGEKILN_CHECK_MANIFESTS", raising=False)  # the suite's own check would stop it first
    monkeypatch.setattr(manifest_module, "stage_sections", wrong_type)
    out = tmp_path / "out"
    result = invoke(work / "tiny.toml", out, work.parent / "cache", "--junit", tmp_path / "run.xml")
    assert result.exit_code == 3, result.output
    flat = " ".join(result.stderr.split())
    assert "report.html was not written: a bug in edgekiln's report step" in flat and "prune.stopped = 5" in flat
    junit = (tmp_path / "run.xml").read_text()
    assert "a bug in edgekiln: the run&apos;s manifest does not fit its schema" in junit or \
        "a bug in edgekiln: the run's manifest does not fit its schema" in junit
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["report_errors"]) == {"report.html", "report.png and tradeoff.png", "MODEL_CARD.md"}
    assert [a["sha256"] for a in manifest["artifacts"]] == [a["sha256"] for a in first["artifacts"]]
    assert "PASSED" in result.output and not (out / "report.html").exists()


def test_check_verifies_a_finished_run(run, tmp_path):
    root, _, _ = run
    result = CliRunner().invoke(app, ["check", str(root / "out")])
    assert result.exit_code == 0, result.output
    assert "structure checked" in result.output
    assert "x86-server-avx2" in result.output and "estimate" in result.output
    # The iPhone's p90 is not decided here either: the verdict says so, as `run`'s does.
    assert "PASSED with 1 budget not checked" in " ".join(result.output.split())
    # A run whose [release] requires every budget checked fails its check on one that is not.
    copy = tmp_path / "out"
    shutil.copytree(root / "out", copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["config"]["release"] = {"require_checked": True}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    result = CliRunner().invoke(app, ["check", str(copy), "--no-accuracy", "--junit", str(tmp_path / "check.xml")])
    assert result.exit_code == 1, result.output
    words = " ".join(result.output.split())
    assert "release.require_checked = true: the 1 budget(s) not checked fail the check" in words and "FAILED" in words
    failed = [c for suite in junitparser.JUnitXml.fromfile(str(tmp_path / "check.xml")) for c in suite
              if c.result and isinstance(c.result[0], junitparser.Failure)]
    assert [c.name for c in failed] == ["targets.iphone.budget.p90_ms"]


def test_check_against_a_tighter_profile_fails_naming_the_budget(run, tmp_path):
    root, _, _ = run
    tight = tmp_path / "tight-server.toml"
    tight.write_text('name = "tight-server"\ndevice = "this host"\nformat = "onnx"\n[runtime]\nthreads = 2\n'
                     '[budget]\np50_ms = 0.0001\n[runner]\nkind = "host"\n')
    result = CliRunner().invoke(app, ["check", str(root / "out"), "--no-accuracy", "--profile", str(tight)])
    assert result.exit_code == 1, result.output
    assert "gate FAILED: target server: p50 latency" in " ".join(result.output.split())
    assert "budget.p50_ms of profile tight-server" in " ".join(result.output.split())
    result = CliRunner().invoke(app, ["check", str(root / "out"), "--profile", "raspberry-pi-5-cpu-nope"])
    assert result.exit_code == 2 and "unknown profile" in result.stderr


def test_bench_measures_one_artifact_on_a_profile(run, tmp_path):
    root, _, _ = run
    out = root / "out"
    result = CliRunner().invoke(app, ["bench", str(out / "model.onnx"), "--profile", "x86-server-avx2",
                                      "--json", str(tmp_path / "bench.json")])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "bench.json").read_text())
    assert record["passed"] and record["sha256_matches"] and record["measurement"]["source"] == "host"

    host_tflite = tmp_path / "host-tflite.toml"
    host_tflite.write_text('name = "host-tflite"\ndevice = "this host"\nformat = "tflite"\n'
                           '[budget]\npeak_memory_mb = 512.0\n[runner]\nkind = "host"\nruns = 20\n')
    result = CliRunner().invoke(app, ["bench", str(out / "model.tflite"), "--profile", str(host_tflite),
                                      "--json", str(tmp_path / "tflite.json")])
    assert result.exit_code == 0, result.output
    measurement = json.loads((tmp_path / "tflite.json").read_text())["measurement"]
    assert measurement["source"] == "host" and measurement["tool"] == "ai-edge-litert"
    assert measurement["latency_ms"]["runs"] == 20 and measurement["peak_memory_mb"] is not None

    result = CliRunner().invoke(app, ["bench", str(out / "model.tflite"), "--profile", "pixel-3-cpu"])
    assert result.exit_code == 2 and "cannot be reached" in result.stderr and "--allow-estimate" in result.stderr
    result = CliRunner().invoke(app, ["bench", str(out / "model.tflite"), "--profile", "pixel-3-cpu",
                                      "--allow-estimate"])
    assert result.exit_code == 0 and "estimate" in result.output
    result = CliRunner().invoke(app, ["bench", str(out / "model.onnx"), "--profile", "pixel-3-cpu"])
    assert result.exit_code == 2 and "is for tflite artifacts" in result.stderr

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "model.onnx").write_bytes((copy / "model.onnx").read_bytes() + b"\0")
    result = CliRunner().invoke(app, ["bench", str(copy / "model.onnx"), "--profile", "x86-server-avx2"])
    assert result.exit_code == 1 and "sha256 differs" in result.output

    # An artifact whose edgekiln metadata was edited by hand, alone (no manifest beside it): exit 2, naming the key.
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(out / "model.tflite", alone / "model.tflite")
    tflite = get_format("tflite")
    tflite.write_metadata(alone / "model.tflite", {**tflite.read_metadata(alone / "model.tflite"),
                                                   "edgekiln_other_layers": "two float layers"})
    result = CliRunner().invoke(app, ["bench", str(alone / "model.tflite"), "--profile", "pixel-3-cpu",
                                      "--allow-estimate"])
    assert result.exit_code == 2 and "its metadata 'edgekiln_other_layers' is not what edgekiln writes" in \
        " ".join(result.stderr.split())


def test_check_fails_a_tampered_artifact_and_rejects_a_non_run(run, tmp_path):
    root, _, _ = run
    copy = tmp_path / "out"
    shutil.copytree(root / "out", copy)
    onnx = copy / "model.onnx"
    onnx.write_bytes(onnx.read_bytes() + b"\0")
    result = CliRunner().invoke(app, ["check", str(copy), "--no-accuracy"])
    assert result.exit_code == 1, result.output
    assert "server: sha256 differs from the manifest" in result.output

    result = CliRunner().invoke(app, ["check", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "manifest.json does not exist" in result.stderr


@pytest.mark.parametrize("candidate, message", [
    ('{arch = "resnet10t", checkpoint = "teacher.safetensors"}', "teacher.safetensors cannot be read"),
    ('{arch = "resnet10t", checkpoint = "missing.safetensors"}', "missing.safetensors does not exist"),
    ('"hf:no_such_directory"', "cannot load transformers checkpoint 'no_such_directory'"),
])
def test_a_teacher_that_cannot_be_loaded_exits_2_naming_it_before_training(tmp_path, candidate, message):
    (tmp_path / "teacher.safetensors").write_bytes(b"\x00" * 64)  # corrupt
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace('"resnet10t"', candidate))
    result = invoke(config, tmp_path / "out", tmp_path / "cache")
    assert result.exit_code == 2, result.output
    assert "teacher.candidates[0]" in result.stderr and message in result.stderr
    assert not (tmp_path / "cache").exists()


def test_a_conversion_failure_exits_2_naming_the_format_and_keeps_the_cache_clean(run, monkeypatch):
    root, _, _ = run
    work = root / "unconvertible"
    work.mkdir()
    config = write_config(work, targets='[[targets]]\nname = "server"\nformat = "onnx"\nartifact = "u.onnx"\n')
    onnx_format = get_format("onnx")
    from edgekiln.targets.errors import ConversionError

    real = onnx_format.export_int8

    def refuse_after_the_precheck(model, example, calibration, path, *args, **kwargs):
        # the untrained student's pre-check (cached or not) converts; the export itself fails
        if Path(path).stem == "precheck":
            return real(model, example, calibration, path, *args, **kwargs)
        raise ConversionError("onnx", "Exporting the operator 'aten::fft_rfft2' is not supported")

    monkeypatch.setattr(onnx_format, "export_int8", refuse_after_the_precheck)
    result = invoke(config, work / "out", root / "cache", "--junit", work / "run.xml")
    assert result.exit_code == 2, result.output
    assert "onnx conversion failed" in result.stderr and "aten::fft_rfft2" in result.stderr
    errors = [c.result[0] for c in next(iter(junitparser.JUnitXml.fromfile(str(work / "run.xml"))))
              if c.result and type(c.result[0]).__name__ == "Error"]
    assert len(errors) == 1 and "aten::fft_rfft2" in errors[0].message
    manifest = json.loads((work / "out" / "manifest.json").read_text())
    assert manifest["passed"] is False and "aten::fft_rfft2" in manifest["error"]
    assert not (work / "out" / "u.onnx").exists()
    assert list((root / "cache" / ".tmp").iterdir()) == []


def _entry_of(root, manifest, stage):
    key = next(s["key"] for s in manifest["stages"] if s["name"] == stage)
    return root / "cache" / stage / key


@pytest.mark.slow  # slow: test_cache.py checks entries against their integrity records in the default suite
def test_a_flipped_byte_in_a_cached_artifact_is_caught_recomputed_and_never_published(run):
    root, _, first = run
    entry = _entry_of(root, first, "export")
    onnx = entry / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx.write_bytes(bytes(data))
    result = invoke(root / "tiny.toml", root / "flipped", root / "cache")
    assert result.exit_code == 0, result.output
    assert "discarded" in result.output
    manifest = json.loads((root / "flipped" / "manifest.json").read_text())
    assert manifest["cache"]["discarded"][0]["why"] == "model.onnx differs from what was written (sha256)"
    stages = {s["name"]: s["cached"] for s in manifest["stages"]}
    assert stages == {"teacher": True, "distill": True, "prune": True, "quantize": True, "export": False}
    assert manifest["cache"]["discarded"][0]["entry"].startswith("export/")
    record = next(a for a in manifest["artifacts"] if a["target"] == "server")
    assert record["sha256"] == sha256(root / "flipped" / "model.onnx")
    assert record["sha256"] == sha256(entry / "model.onnx") != hashlib.sha256(bytes(data)).hexdigest()


def test_an_edited_cached_accuracy_is_caught_and_recomputed(run):
    root, _, first = run
    result_json = _entry_of(root, first, "quantize") / "result.json"
    record = json.loads(result_json.read_text())
    record["accuracy"] = 99.0
    result_json.write_text(json.dumps(record, indent=1))
    result = invoke(root / "tiny.toml", root / "edited", root / "cache")
    assert result.exit_code == 0, result.output
    assert "discarded" in result.output
    manifest = json.loads((root / "edited" / "manifest.json").read_text())
    (discarded,) = manifest["cache"]["discarded"]
    assert discarded["entry"].startswith("quantize/") and discarded["why"].startswith("result.json")
    quantize = next(s for s in manifest["stages"] if s["name"] == "quantize")
    assert quantize["cached"] is False and quantize["accuracy"] == next(
        s["accuracy"] for s in first["stages"] if s["name"] == "quantize")


def test_a_full_disk_while_publishing_leaves_no_partial_artifact_and_the_rerun_is_warm(run, monkeypatch):
    import errno

    root, _, _ = run
    out = root / "full-disk"
    real = shutil.copyfile

    def half_then_enospc(src, dst, *args, **kwargs):
        if str(src).endswith(".tflite"):
            with open(dst, "wb") as f:
                f.write(b"\0" * 100)
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(shutil, "copyfile", half_then_enospc)
    result = invoke(root / "tiny.toml", out, root / "cache")
    assert result.exit_code == 2, result.output
    assert "No space left on device" in result.stderr and f"cannot write {out / 'model.tflite'}" in " ".join(
        result.stderr.split())
    assert not (out / "model.tflite").exists() and not any(p.name.startswith(".model") for p in out.iterdir())
    assert not [p for p in root.iterdir() if p.name.startswith(".full-disk")]  # no staging folder left
    monkeypatch.setattr(shutil, "copyfile", real)
    result = invoke(root / "tiny.toml", out, root / "cache")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert all(s["cached"] for s in manifest["stages"]) and (out / "model.tflite").exists()


def test_an_unwritable_out_or_cache_dir_exits_2_before_any_work(run, tmp_path):
    root, _, _ = run
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = invoke(root / "tiny.toml", blocker / "out", tmp_path / "cache")
    assert result.exit_code == 2, result.output
    assert "--out" in result.stderr and "not writable" in result.stderr
    assert not (tmp_path / "cache").exists()  # nothing ran
    result = invoke(root / "tiny.toml", tmp_path / "out", blocker / "cache")
    assert result.exit_code == 2 and "--cache-dir" in result.stderr and "not writable" in result.stderr


def test_a_pass_with_unchecked_budgets_says_so_everywhere_and_require_checked_fails_it(run):
    """The shared run's phone target is estimated to an order of magnitude: PASSED must not
    read as every budget met, in any report; [release] require_checked turns it into a failure."""
    root, result, first = run
    unchecked = first["unchecked"]
    assert unchecked and all(line.startswith("target ") and " not checked: " in line for line in unchecked)
    words = f"PASSED with {len(unchecked)} budget{'' if len(unchecked) == 1 else 's'} not checked"
    assert first["passed"] is True and first["verdict"] == words
    assert words in " ".join(result.output.split())
    html = (root / "out" / "report.html").read_text()
    assert f'class="verdict unchecked">{words}</div>' in html and 'id="unchecked"' in html
    card = (root / "out" / "MODEL_CARD.md").read_text()
    assert f"verdict: **{words}**" in card and f"- {unchecked[0]}" in card
    work = root / "require-checked"
    work.mkdir()
    config = write_config(work, extra="\n[release]\nrequire_checked = true\n")
    strict = invoke(config, work / "out", root / "cache", "--junit", work / "run.xml")
    assert strict.exit_code == 1, strict.output
    manifest = json.loads((work / "out" / "manifest.json").read_text())
    assert manifest["passed"] is False and manifest["verdict"] == "FAILED" and manifest["unchecked"] == unchecked
    # The CI report shows what failed the job: the budget not checked is a failure case, not a skip.
    failed = [c for suite in junitparser.JUnitXml.fromfile(str(work / "run.xml")) for c in suite
              if c.result and isinstance(c.result[0], junitparser.Failure)]
    assert [c.name for c in failed] == [unchecked[0].split(": ", 1)[1].split(" = ")[0]]
    assert failed[0].result[0].message.startswith("release.require_checked = true: ")
    assert all(s["cached"] for s in manifest["stages"])  # [release] is no stage's input: nothing re-ran


def test_each_artifacts_own_metadata_is_enough_to_reach_its_test_accuracy(run):
    """An app that knows nothing but the file: the artifact's embedded `interface` (layout,
    dtype, scaling) and labels, fed the test split's pixels, gives the manifest's test
    accuracy in the artifact's runtime (ONNX and TFLite: the runtimes that run here)."""
    import numpy as np

    from edgekiln.data.dataset import load_dataset
    from edgekiln.engine.config import load_config
    from edgekiln.targets import get_format

    root, _, manifest = run
    data = load_dataset(load_config(root / "tiny.toml").data)
    pixels = data.test_x.numpy()  # uint8 NCHW at the data's size, as the split holds them
    labels = data.test_y.numpy()
    checked = 0
    for artifact in manifest["artifacts"]:
        if artifact["format"] not in ("onnx", "tflite"):
            continue
        path = root / "out" / artifact["path"]
        meta = get_format(artifact["format"]).read_metadata(path)
        interface = json.loads(meta["interface"])["input"]
        assert json.loads(meta["labels"]) == manifest["labels"]
        x = pixels.astype(np.float32) / 255.0
        if "mean" in interface:
            mean = np.array(interface["mean"], np.float32)[None, :, None, None]
            x = (x - mean) / np.array(interface["std"], np.float32)[None, :, None, None]
        if interface["dtype"] == "uint8":
            x = pixels
        if interface["layout"] == "NHWC":
            x = x.transpose(0, 2, 3, 1)
        x = np.ascontiguousarray(x)
        if artifact["format"] == "onnx":
            import onnxruntime

            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            top1 = np.array([session.run(None, {name: x[i:i + 1]})[0].argmax() for i in range(len(x))])
        else:
            from ai_edge_litert.interpreter import Interpreter

            interpreter = Interpreter(model_path=str(path))
            interpreter.allocate_tensors()
            inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
            top1 = []
            for i in range(len(x)):
                interpreter.set_tensor(inp["index"], x[i:i + 1])
                interpreter.invoke()
                top1.append(interpreter.get_tensor(out["index"]).argmax())
            top1 = np.array(top1)
        accuracy = float((top1 == labels).mean() * 100)
        assert abs(accuracy - artifact["test_accuracy"]) <= 0.5, (artifact["target"], accuracy,
                                                                 artifact["test_accuracy"])
        checked += 1
    assert checked >= 2
