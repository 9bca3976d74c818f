"""ExecuTorch, the fourth format: a .pte lowered to XNNPACK in fp32 and INT8, run in ExecuTorch's
own runtime here (accuracy and host latency), timed on a phone through executor_runner over
adb, with edgekiln's metadata inside the program."""

import json

import numpy as np
import pytest
import torch
from test_adb_runner import DATA, FEATURES, commands, fake_adb
from torch import nn

from edgekiln.targets import get_format, runners
from edgekiln.targets.errors import ConversionError
from edgekiln.targets.formats.executorch import parse_executor_runner
from edgekiln.targets.profiles import host_profile, load_profile
from edgekiln.targets.target import TargetConfig

pytest.importorskip("executorch", reason="executorch is a dependency of edgekiln; install it with make")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.Conv2d(32, 32, 3, padding=1, groups=32), nn.Conv2d(32, 64, 1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 4)).eval()


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).standard_normal((24, 3, 16, 16)).astype(np.float32)


@pytest.fixture(scope="module")
def programs(model, images, tmp_path_factory):
    """fp32 and INT8 .pte files of `model`, with edgekiln-style metadata."""
    fmt, out = get_format("executorch"), tmp_path_factory.mktemp("pte")
    paths, applied = {}, {}
    for encoding in fmt.ENCODINGS:
        paths[encoding] = out / f"model.{encoding}.pte"
        applied[encoding] = fmt.export(model, torch.from_numpy(images[:1]), images, paths[encoding],
                                       {"labels": json.dumps(["a", "b", "c", "d"]), "edgekiln_encoding": encoding},
                                       encoding)
    return paths, applied


def test_fp32_and_int8_programs_run_in_executorch_and_match_torch(model, images, programs):
    fmt = get_format("executorch")
    paths, applied = programs
    with torch.no_grad():
        reference = model(torch.from_numpy(images)).numpy()
    fp32 = fmt.predict(paths["fp32"], images)
    int8 = fmt.predict(paths["int8"], images)
    np.testing.assert_allclose(fp32, reference, atol=1e-5)
    assert 0 < np.abs(int8 - reference).max() < 0.1  # quantized: close, not equal
    assert (int8.argmax(1) == reference.argmax(1)).mean() >= 0.9
    assert paths["int8"].stat().st_size < paths["fp32"].stat().st_size
    assert applied["fp32"] == {} and applied["int8"]["calibration_images"] == len(images)


def test_metadata_travels_inside_the_program_and_the_structure_is_checked(programs):
    fmt = get_format("executorch")
    paths, _ = programs
    metadata = fmt.read_metadata(paths["int8"])
    assert json.loads(metadata["labels"]) == ["a", "b", "c", "d"] and metadata["edgekiln_encoding"] == "int8"
    assert fmt.check(paths["int8"], (1, 3, 16, 16)) == {"methods": ["edgekiln_metadata", "forward"],
                                                        "input": [1, 3, 16, 16]}
    with pytest.raises(ConversionError, match="expected 'forward' with input \\[1, 3, 32, 32\\]"):
        fmt.check(paths["int8"], (1, 3, 32, 32))


def test_host_runner_times_the_program_in_executorch_in_a_child_process(programs):
    profile = host_profile("executorch", 1).model_copy()
    profile.runner.runs, profile.runner.warmup_runs = 20, 2
    measured = runners.measure(programs[0]["int8"], profile, FEATURES, "int8")
    assert measured.source == "host" and measured.tool == "executorch"
    assert 0 < measured.latency_ms["p50"] <= measured.latency_ms["p90"] and measured.latency_ms["runs"] == 20


def test_executor_runner_output_is_parsed_without_its_warmup_runs():
    latency, memory, notes = parse_executor_runner((DATA / "executor_runner_xnnpack.txt").read_text(), warmup=10)
    assert latency == pytest.approx({"p50": 1.099, "p90": 1.1782, "mean": 1.099, "std": latency["std"], "runs": 100})
    assert memory is None and "no peak memory" in notes[0]


def test_a_phone_times_the_program_with_executor_runner_over_adb(tmp_path, monkeypatch):
    adb, log = fake_adb(tmp_path, output="executor_runner_xnnpack.txt")
    monkeypatch.setenv("EDGEKILN_ADB", str(adb))
    monkeypatch.delenv("ANDROID_SERIAL", raising=False)
    artifact = tmp_path / "model.pte"
    artifact.write_bytes(b"PTE")
    profile = load_profile("android-executorch-cpu")
    assert profile.estimate is None  # measure-only: no published ExecuTorch latencies to calibrate on
    result = runners.measure(artifact, profile, FEATURES, "int8")
    assert result.source == "device" and result.tool == "executor_runner"
    assert result.latency_ms["p50"] == pytest.approx(1.099) and result.latency_ms["runs"] == 100
    assert commands(log)[-1] == ["shell", "/data/local/tmp/executor_runner",
                                 "--model_path=/data/local/tmp/edgekiln/model.pte", "--method_name=forward",
                                 "--num_executions=110", "--cpu_threads=4", "--print_output=none"]


def test_targets_name_the_format_and_its_encodings():
    target = TargetConfig(name="pte", format="executorch", encoding=["fp32", "int8"])
    assert target.resolve().format == "executorch" and target.artifact_name == "model.pte"
    from edgekiln.targets.target import EncodingError

    with pytest.raises(EncodingError, match="executorch artifacts cannot be fp16"):
        TargetConfig(name="pte", format="executorch", encoding=["fp16"]).resolve()
