"""A MobileViT student through every stage and every target, in a tiny configuration:
pruned (attention kept whole), INT8, and its ONNX / TFLite artifacts validated in their
runtimes, its Core ML package checked structurally."""

import json
import textwrap

import pytest
from tiny_pipeline import THREE_TARGETS as ALL_TARGETS  # the MobileNet pipeline's phone, server and iPhone targets
from typer.testing import CliRunner

from edgekiln.interfaces.cli import app

TINY_MOBILEVIT = """
[data]
source = "digits"
image_size = 32
max_samples = 570
test_fraction = 0.1   # 399 training images, as many as before the test split
seed = 0

[teacher]
candidates = ["resnet10t"]
epochs = 6

[student]
arch = "mobilevit_xxs"
epochs = 6
lr = 3e-3

[distill]
feature_loss = "fitnets"

[prune]
macs_ratio = 0.8
finetune_epochs = 2

[quantize]
calibration_samples = 32

[budget]
max_drop_total = 90.0
"""


# Three minutes on a 2-core CI runner (two TFLite conversions of MobileViT): `make test-all`.
@pytest.mark.slow
def test_mobilevit_student_runs_every_stage_and_target(tmp_path):
    config = tmp_path / "mobilevit.toml"
    config.write_text(textwrap.dedent(TINY_MOBILEVIT) + textwrap.dedent(ALL_TARGETS))
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(tmp_path / "out"),
                                      "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    stages = {s["name"]: s for s in manifest["stages"]}
    assert stages["prune"]["macs"] <= 0.8 * stages["distill"]["macs"]
    artifacts = {a["format"]: a for a in manifest["artifacts"]}
    assert set(artifacts) == {"tflite", "onnx", "coreml"}
    assert artifacts["tflite"]["accuracy_source"] == artifacts["onnx"]["accuracy_source"] == "runtime"
    assert artifacts["coreml"]["accuracy_source"] == "proxy"
    for a in artifacts.values():
        assert (tmp_path / "out" / a["path"]).exists()
        assert a["accuracy"] > 15  # chance is 10%; the models agree with their float source
    check = CliRunner().invoke(app, ["check", str(tmp_path / "out")])
    assert check.exit_code == 0, check.output
