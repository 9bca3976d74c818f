"""Faults injected on purpose: each gives its stated exit code and message, and nothing
corrupt is published or re-used (README: "What edgekiln guarantees")."""

import json
import textwrap

import pytest
from typer.testing import CliRunner

from edgekiln.cli import app

QUICK = """
[data]
source = "digits"
image_size = 16
max_samples = 200

[teacher]
candidates = ["resnet10t"]
epochs = 1
{teacher_extra}

[student]
epochs = 1

[budget]
max_drop_total = 100.0   # the faults, not the accuracy of so tiny a run, are under test

[[targets]]
name = "server"
format = "onnx"
"""


def run(tmp_path, teacher_extra="", replace=None):
    text = textwrap.dedent(QUICK.format(teacher_extra=teacher_extra))
    for old, new in (replace or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    config = tmp_path / "quick.toml"
    config.write_text(text)
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(tmp_path / "out"),
                                      "--cache-dir", str(tmp_path / "cache")])
    return result


def test_a_diverging_stage_exits_1_names_stage_epoch_step_and_key_and_caches_nothing(tmp_path, monkeypatch):
    from edgekiln.stages import precheck

    monkeypatch.setattr(precheck, "run", lambda data, archs, targets: ([], []))  # conversion is not under test
    result = run(tmp_path, teacher_extra="lr = 1e30\nselect = \"accuracy\"",
                 replace={"[teacher]": "[train]\nwarmup_epochs = 0.0\n\n[teacher]"})
    assert result.exit_code == 1, result.output
    assert "training diverged" in result.output and "teacher.lr" in result.output and "epoch 1/1" in result.output
    assert not (tmp_path / "cache" / "teacher").exists() or not any((tmp_path / "cache" / "teacher").iterdir())
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["passed"] is False and "TrainingDiverged" in manifest["error"]


@pytest.mark.parametrize("line, key", [("lr = inf", "teacher.lr"), ("lr = nan", "teacher.lr"),
                                       ('epochs = "1"', "teacher.epochs")])
def test_non_finite_or_mistyped_numbers_exit_2_naming_the_key(tmp_path, line, key):
    result = run(tmp_path, teacher_extra=line.replace("epochs", "max_macs") if "epochs" in line else line,
                 replace={"epochs = 1\nmax_macs": "epochs"} if "epochs" in line else None)
    assert result.exit_code == 2, result.output
    assert key in result.output
    assert not (tmp_path / "cache").exists()  # refused before any work


class _Payload:
    """Unpickling this runs code: it would create a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_checkpoint_with_pickled_code_is_refused_and_runs_nothing(tmp_path):
    import torch

    from edgekiln.stages import modeling
    from edgekiln.stages.errors import InputError

    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"fc.weight": _Payload(marker)}}, path)
    with pytest.raises(InputError, match="evil.pt"):
        modeling.load_checkpoint(modeling.create("resnet10t", 10), path)
    assert not marker.exists()


# Runs the CLI in a child process that kills itself (SIGKILL: no clean-up runs) right after
# distillation's checkpoint of epoch 2.
_KILLED_AFTER_EPOCH_2 = """
import os, signal, sys
from edgekiln.stages import training
real = training.Trainer.save
def save_then_die(self):
    real(self)
    if self.desc.startswith("distill") and self.epoch == 2:
        os.kill(os.getpid(), signal.SIGKILL)
training.Trainer.save = save_then_die
from edgekiln.cli import main
sys.argv = ["edgekiln"] + sys.argv[1:]
main()
"""


def test_a_stage_killed_mid_training_resumes_at_its_last_epoch_and_ends_as_if_never_killed(tmp_path):
    import subprocess
    import sys

    config = tmp_path / "quick.toml"
    config.write_text(textwrap.dedent(QUICK.format(teacher_extra="")).replace(
        "[student]\nepochs = 1", "[student]\nepochs = 4"))

    def cli(cache, out, script=None):
        argv = ["run", str(config), "--out", str(tmp_path / out), "--cache-dir", str(tmp_path / cache)]
        command = [sys.executable, "-c", script, *argv] if script else [sys.executable, "-m", "edgekiln.cli", *argv]
        return subprocess.run(command, capture_output=True, text=True, timeout=600)

    straight = cli("cache-a", "out-a")
    assert straight.returncode == 0, straight.stdout + straight.stderr
    killed = cli("cache-b", "out-b", _KILLED_AFTER_EPOCH_2)
    assert killed.returncode == -9
    assert not (tmp_path / "cache-b" / "distill").exists()  # no entry, only its checkpoints
    resumed = cli("cache-b", "out-b")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming at epoch 2/4" in resumed.stdout
    assert not any((tmp_path / "cache-b" / ".partial").iterdir())  # checkpoints go when the stage completes
    a, b = (json.loads((tmp_path / out / "manifest.json").read_text()) for out in ("out-a", "out-b"))
    assert [s["accuracy"] for s in a["stages"]] == [s["accuracy"] for s in b["stages"]]
    assert a["artifacts"][0]["sha256"] == b["artifacts"][0]["sha256"]
