"""The adb runner: its parsers against recorded benchmark_model / onnxruntime_perf_test output,
and the command lines it builds, seen by a fake `adb` on PATH (no Android device here)."""

import json
import os
import stat
import textwrap
from pathlib import Path

import pytest

from edgekiln.targets import runners
from edgekiln.targets.cost import CostFeatures
from edgekiln.targets.errors import DeviceUnreachable
from edgekiln.targets.formats.onnx import parse_perf_test
from edgekiln.targets.formats.tflite import parse_benchmark_model
from edgekiln.targets.profiles import load_profile

DATA = Path(__file__).parent / "data"
FEATURES = CostFeatures(macs=900_000, depthwise_macs=90_000, params=580_000, activations=72_000, image_size=32, layers=166)


def test_benchmark_model_output_is_parsed_from_the_timed_runs_line():
    latency, memory, notes = parse_benchmark_model((DATA / "benchmark_model_tflite.txt").read_text())
    assert latency == pytest.approx({"p50": 51.891, "p90": 68.628, "mean": 63.7432, "std": 60.716, "runs": 1000})
    assert memory == pytest.approx(55.4961)
    assert any("p95" in n for n in notes)  # the p90 figure is really benchmark_model's p95: said so


def test_perf_test_output_with_and_without_percentiles():
    latency, memory, notes = parse_perf_test((DATA / "onnxruntime_perf_test_percentiles.txt").read_text())
    assert latency["p50"] == pytest.approx(58.7108) and latency["p90"] == pytest.approx(59.9845)
    assert latency["mean"] == pytest.approx(58.8053) and latency["runs"] == 1000 and not notes
    latency, memory, notes = parse_perf_test((DATA / "onnxruntime_perf_test_no_percentiles.txt").read_text())
    assert latency["p50"] == pytest.approx(84.3236) and latency["p90"] is None and latency["runs"] == 10
    assert memory == pytest.approx(158171136 / 2**20) and "no percentiles" in notes[0]


def fake_adb(tmp_path, state="device", output="benchmark_model_tflite.txt"):
    """An `adb` that logs its argv as JSON lines and answers like a device would."""
    log = tmp_path / "adb.log"
    script = tmp_path / "bin" / "adb"
    script.parent.mkdir()
    script.write_text(textwrap.dedent(f"""\
        #!/usr/bin/env python3
        import json, sys
        args = sys.argv[1:]
        with open({str(log)!r}, "a") as f:
            f.write(json.dumps(args) + "\\n")
        if "-s" in args:
            args = args[2:]
        if args[0] == "get-state":
            print({state!r}) if {state!r} == "device" else sys.exit("error: no devices/emulators found")
        elif args[0] == "shell" and args[1].endswith(("benchmark_model", "onnxruntime_perf_test", "executor_runner")):
            print(open({str(DATA / output)!r}).read())
        """))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script, log


def android_onnx(tmp_path, monkeypatch, sections):
    """(adb log, profile path): an ONNX phone profile timed by onnxruntime_perf_test on the fake adb."""
    adb, log = fake_adb(tmp_path, output="onnxruntime_perf_test_percentiles.txt")
    monkeypatch.setenv("EDGEKILN_ADB", str(adb))
    monkeypatch.delenv("ANDROID_SERIAL", raising=False)
    profile = tmp_path / "android-onnx.toml"
    profile.write_text('name = "android-onnx"\ndevice = "test phone"\nformat = "onnx"\n' + sections)
    return log, profile


def commands(log):
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_tflite_on_a_device_pushes_the_artifact_and_runs_benchmark_model(tmp_path, monkeypatch):
    adb, log = fake_adb(tmp_path)
    monkeypatch.delenv("EDGEKILN_ADB", raising=False)  # found on PATH, as `adb` on a workstation
    monkeypatch.setenv("PATH", f"{adb.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("ANDROID_SERIAL", "R58M123")
    artifact = tmp_path / "model.tflite"
    artifact.write_bytes(b"TFL3")
    result = runners.measure(artifact, load_profile("pixel-3-cpu"), FEATURES, "int8")
    assert result.source == "device" and result.runner == "adb" and "R58M123" in result.device
    assert result.latency_ms["p50"] == 51.891 and result.peak_memory_mb == pytest.approx(55.4961)
    assert commands(log) == [
        ["-s", "R58M123", "get-state"],
        ["-s", "R58M123", "shell", "mkdir", "-p", "/data/local/tmp/edgekiln"],
        ["-s", "R58M123", "push", str(artifact), "/data/local/tmp/edgekiln/model.tflite"],
        ["-s", "R58M123", "shell", "/data/local/tmp/benchmark_model", "--graph=/data/local/tmp/edgekiln/model.tflite",
         "--num_threads=4", "--warmup_runs=10", "--num_runs=100", "--report_peak_memory_footprint=true",
         "--use_xnnpack=true"],
    ]


def test_candidates_on_a_device_are_timed_in_turns_one_benchmark_call_per_round(tmp_path, monkeypatch):
    adb, log = fake_adb(tmp_path)
    monkeypatch.setenv("EDGEKILN_ADB", str(adb))
    monkeypatch.delenv("ANDROID_SERIAL", raising=False)
    paths = [tmp_path / "m.fp32.tflite", tmp_path / "m.int8.tflite"]
    for path in paths:
        path.write_bytes(b"TFL3")
    profile = load_profile("pixel-3-cpu")
    profile = profile.model_copy(update={"runner": profile.runner.model_copy(update={"choice_rounds": 3})})
    found = runners.interleave(paths, profile)
    assert found.runner == "adb" and found.rounds == 3 and found.round_p50_ms == [[51.891] * 3] * 2
    pushed = [c[-1].rsplit("/", 1)[1] for c in commands(log) if c[0] == "push"]
    assert pushed == ["m.fp32.tflite", "m.int8.tflite", "m.int8.tflite", "m.fp32.tflite",
                      "m.fp32.tflite", "m.int8.tflite"]  # who goes first rotates


def test_onnx_on_a_device_runs_onnxruntime_perf_test_with_the_profile_threads(tmp_path, monkeypatch):
    log, profile = android_onnx(tmp_path, monkeypatch, '[runtime]\nthreads = 4\nexecution_provider = "nnapi"\n'
                                                       '[runner]\nkind = "adb"\nruns = 50\n')
    artifact = tmp_path / "model.onnx"
    artifact.write_bytes(b"onnx")
    result = runners.measure(artifact, load_profile(profile), FEATURES, "int8")
    assert result.latency_ms["p90"] == pytest.approx(59.9845)
    assert commands(log)[-1] == ["shell", "/data/local/tmp/onnxruntime_perf_test", "-m", "times", "-r", "50",
                                 "-x", "4", "-e", "nnapi", "-I", "/data/local/tmp/edgekiln/model.onnx"]


def test_no_device_is_unreachable_unless_the_target_allows_an_estimate(tmp_path, monkeypatch):
    adb, _ = fake_adb(tmp_path, state="offline")
    monkeypatch.setenv("EDGEKILN_ADB", str(adb))
    artifact = tmp_path / "model.tflite"
    artifact.write_bytes(b"TFL3")
    with pytest.raises(DeviceUnreachable, match="no Android device ready"):
        runners.measure(artifact, load_profile("pixel-3-cpu"), FEATURES, "int8")
    result = runners.measure(artifact, load_profile("pixel-3-cpu"), FEATURES, "int8", allow_estimate=True)
    assert result.source == "estimate" and "could not reach the device" in result.notes[0]
    monkeypatch.setenv("EDGEKILN_ADB", str(tmp_path / "no-such-adb"))
    with pytest.raises(DeviceUnreachable, match="adb executable .* not found"):
        runners.measure(artifact, load_profile("pixel-3-cpu"), FEATURES, "int8")


def test_calibrate_over_adb_pushes_and_times_every_reference_artifact(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from edgekiln.interfaces.cli import app

    log, profile = android_onnx(tmp_path, monkeypatch, '[runtime]\nthreads = 4\n[runner]\nkind = "adb"\n')
    out = tmp_path / "calibrated" / "phone.toml"
    result = CliRunner().invoke(app, ["profile", "calibrate", str(profile), "--runner", "adb", "--out", str(out),
                                      "--model", "edgekiln_probe_conv1@32", "--model", "resnet10t@32",
                                      "--encoding", "fp32", "--encoding", "int8"])
    assert result.exit_code == 0, result.output
    pushed = [c[-1] for c in commands(log) if c[0] == "push"]
    assert pushed == [f"/data/local/tmp/edgekiln/{m}-32-{e}.onnx" for m in ("edgekiln_probe_conv1", "resnet10t")
                      for e in ("fp32", "int8")]
    table = (out.parent / "phone.references.csv").read_text().splitlines()
    assert len(table) == 5 and all("58.71" in row and "test phone via adb" in row for row in table[1:])
    assert load_profile(out).runner.kind == "adb"
