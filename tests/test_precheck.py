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
