"""The convertibility pre-check stops a student no converter can handle before any training."""

import json
import textwrap
import time

import torch
from timm.models import register_model
from typer.testing import CliRunner

from edgekiln.interfaces.cli import app


class FourierStudent(torch.nn.Module):
    """A classifier with an FFT in it: torch runs it, the ONNX exporter has no aten::fft_fft2."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.head = torch.nn.Linear(8, num_classes)

    def forward(self, x):
        return self.head(torch.fft.fft2(self.conv(x)).abs().mean((2, 3)))


@register_model
def edgekiln_test_fourier_student(pretrained=False, num_classes=10, **kwargs):
    return FourierStudent(num_classes)


def test_an_unconvertible_student_stops_the_run_in_seconds_naming_target_and_op(tmp_path):
    config = tmp_path / "fourier.toml"
    config.write_text(textwrap.dedent("""
        [data]
        source = "digits"
        image_size = 16

        [teacher]
        candidates = ["resnet10t"]
        epochs = 50

        [student]
        arch = "edgekiln_test_fourier_student"
        epochs = 50

        [[targets]]
        name = "server"
        profile = "x86-server-avx2"

        [[targets]]
        name = "phone"
        format = "tflite"
        """))
    started = time.monotonic()
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(tmp_path / "out"),
                                      "--cache-dir", str(tmp_path / "cache")])
    seconds = time.monotonic() - started
    assert result.exit_code == 2, result.output
    assert seconds < 60, seconds
    message = " ".join(result.output.split())
    assert "convertibility pre-check" in message and "target 'server' (onnx)" in message
    assert "aten::fft_fft2" in message
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["passed"] is False and "aten::fft_fft2" in manifest["error"] and manifest["stages"] == []
    assert not list((tmp_path / "cache").glob("teacher/*"))  # no teacher was trained


def test_a_cached_check_keeps_the_config_in_force_and_names_its_targets(tmp_path):
    """A check's cached record is re-used when only what it does not depend on changed (here
    a target's name and the student's epochs), and it narrows only the keys it changed: the
    epochs of the config in force stay, the dropped candidate stays dropped, and the record
    names the targets as the config in force does."""
    from edgekiln.engine.cache import StageCache
    from edgekiln.engine.config import config_from_text
    from edgekiln.engine.runner import _run_check
    from edgekiln.stages import Check
    from edgekiln.stages.distill import precheck

    calls = []

    def fake_check(data, cfg):  # drops the second candidate, converts nothing
        calls.append(cfg.student.epochs)
        return ({"targets": [{"student": "resnet10t", "format": "onnx", "targets": [t.name for t in cfg.targets],
                              "seconds": 0.1}], "dropped": [{"name": "mobilenetv3_small_050", "why": "test"}]},
                {"student": {"arch": ["resnet10t"]}})

    check = Check("precheck", fake_check, precheck.inputs, refresh=precheck.refresh)
    data = type("Data", (), {"fingerprint": "same images"})()
    cache = StageCache(tmp_path / "cache")

    def config(target: str, epochs: int):
        return config_from_text(textwrap.dedent(f"""
            [data]
            source = "digits"
            [teacher]
            candidates = ["resnet10t"]
            [student]
            arch = ["resnet10t", "mobilenetv3_small_050"]
            epochs = {epochs}
            [[targets]]
            name = "{target}"
            format = "onnx"
            """), base=tmp_path, name="test.toml")

    first = config("server", 3)
    record = _run_check(check, first, data, cache, code="code")
    assert record["cached"] is False and first.student.candidates == ["resnet10t"]

    second = config("edge-box", 7)
    record = _run_check(check, second, data, cache, code="code")
    assert calls == [3], "a target's new name re-ran a check that depends on its format only"
    assert record["cached"] is True and record["targets"][0]["targets"] == ["edge-box"]
    assert second.student.candidates == ["resnet10t"] and second.student.epochs == 7

    third = config("server", 3)
    third.targets[0].format = "tflite"
    _run_check(check, third, data, cache, code="code")
    assert calls == [3, 3], "another format did not re-run the check"
