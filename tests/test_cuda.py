"""The CUDA path: teacher fine-tuning, distillation, pruning recovery and QAT on a GPU, then
an ONNX artifact scored in onnxruntime. Runs only where torch sees a GPU (CI has none)."""

import json
import textwrap

import pytest
import torch
from typer.testing import CliRunner

from edgekiln.interfaces.cli import app

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CONFIG = """
[data]
source = "digits"
image_size = 32
seed = 0

[teacher]
candidates = ["resnet10t"]
epochs = 4

[student]
arch = "mobilenetv3_small_050"
epochs = 6
lr = 6e-3

[prune]
macs_ratio = 0.7
finetune_epochs = 2

[quantize]
mode = "qat"
epochs = 2
calibration_samples = 64

[budget]
max_drop_total = 60.0

[[targets]]
name = "server"
profile = "x86-server-avx2"
"""


def test_a_qat_pipeline_trains_on_the_gpu_and_its_onnx_artifact_scores_in_onnxruntime(tmp_path):
    config = tmp_path / "cuda.toml"
    config.write_text(textwrap.dedent(CONFIG))
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(tmp_path / "out"),
                                      "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["compute"]["device"] == "cuda"
    assert not any(s["cached"] for s in manifest["stages"])
    assert manifest["quantize"]["mode"] == "qat"
    stages = {s["name"]: s for s in manifest["stages"]}
    assert stages["teacher"]["accuracy"] > 80 and stages["quantize"]["accuracy"] > 50  # chance is 10%
    (artifact,) = manifest["artifacts"]
    assert artifact["format"] == "onnx" and artifact["accuracy_source"] == "runtime"
    assert artifact["accuracy"] > 50
