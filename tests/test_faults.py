"""Faults injected on purpose: each gives its stated exit code and message, and nothing
corrupt is published or re-used (docs/guarantees.md)."""

import copy
import json
import os
import re
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgekiln.interfaces.cli import app

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
    from edgekiln.stages.distill import precheck

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
    assert key in result.stderr
    assert not (tmp_path / "cache").exists()  # refused before any work


class _Payload:
    """Unpickling this runs code: it would create a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_checkpoint_with_pickled_code_is_refused_and_runs_nothing(tmp_path):
    import torch

    from edgekiln.errors import InputError
    from edgekiln.training import modeling

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
from edgekiln.training import trainer
real = trainer.Trainer.save
def save_then_die(self):
    real(self)
    if self.desc.startswith("distill") and self.epoch == 2:
        os.kill(os.getpid(), signal.SIGKILL)
trainer.Trainer.save = save_then_die
from edgekiln.interfaces.cli import main
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
        command = [sys.executable, "-c", script, *argv] if script else [sys.executable, "-m", "edgekiln.interfaces.cli", *argv]
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


# --- outputs are edgekiln's own ------------------------------------------------------------

def _image_folder(root):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("c0", "c1"):
        (root / name).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def _listing(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


@pytest.mark.parametrize("out, cache, says", [
    ("data/c0", "cache", "--out .*data/c0 is inside data.path"),
    ("data/out", "cache", "--out .*data/out is inside data.path"),
    ("data", "cache", "--out .*data is inside data.path"),
    ("cache", "cache", "--out .*cache and --cache-dir .*cache overlap"),
    ("cache/out", "cache", "overlap"),
    ("out", "data/.cache", "--cache-dir .*data/.cache is inside data.path"),
])
def test_an_out_or_cache_inside_the_data_or_each_other_is_refused_before_any_work(tmp_path, out, cache, says):
    data = _image_folder(tmp_path / "data")
    before = _listing(data)
    config = tmp_path / "folder.toml"
    config.write_text(textwrap.dedent(QUICK.format(teacher_extra="")).replace(
        'source = "digits"', f'source = "imagefolder"\npath = "{data}"'))
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(tmp_path / out),
                                      "--cache-dir", str(tmp_path / cache)])
    assert result.exit_code == 2, result.output
    assert re.search(says, " ".join(result.stderr.split())), result.stderr
    assert _listing(data) == before  # nothing written into the data
    assert not (tmp_path / "cache").exists() and not (tmp_path / "out").exists()


def test_a_folder_of_other_files_is_refused_unless_forced_and_an_earlier_output_is_replaced_whole(run, tmp_path):
    from tiny_pipeline import invoke

    root, _, _ = run
    out = tmp_path / "release"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "manifest.json").write_text('{"mine": true}')
    result = invoke(root / "tiny.toml", out, root / "cache")
    assert result.exit_code == 2, result.output
    flat = " ".join(result.stderr.split())
    assert "is not empty and is not an earlier edgekiln output (it holds manifest.json, notes.txt)" in flat
    assert "--force" in flat and (out / "manifest.json").read_text() == '{"mine": true}'

    result = invoke(root / "tiny.toml", out, root / "cache", "--force")  # warm: every stage is cached
    assert result.exit_code == 0, result.output
    assert (out / "notes.txt").read_text() == "mine"  # beside them, file by file
    assert json.loads((out / "manifest.json").read_text())["passed"] is True
    result = invoke(root / "tiny.toml", out, root / "cache")  # still holds a file that is not ours
    assert result.exit_code == 2 and "holds files an earlier edgekiln run did not write (it holds notes.txt)" in " ".join(
        result.output.split())

    (out / "notes.txt").unlink()
    (out / "stale.tflite").write_bytes(b"")  # listed by no manifest: another's, so refused again
    assert invoke(root / "tiny.toml", out, root / "cache").exit_code == 2
    (out / "stale.tflite").unlink()
    (out / "model.tflite").write_bytes(b"edited")  # the earlier run's own artifact: replaced with the folder
    result = invoke(root / "tiny.toml", out, root / "cache")
    assert result.exit_code == 0, result.output
    assert _listing(out) == _listing(root / "out")
    from edgekiln.system.files import sha256

    tflite = next(a for a in json.loads((out / "manifest.json").read_text())["artifacts"] if a["path"] == "model.tflite")
    assert sha256(out / "model.tflite") == tflite["sha256"]  # the run's artifact, not the edited file
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".release")]  # no staging folder left


def test_a_file_browsers_litter_is_not_someone_elses_work_but_any_other_hidden_file_is(tmp_path):
    from edgekiln.engine.outputs import check_out
    from edgekiln.errors import InputError

    out = tmp_path / "out"
    out.mkdir()
    (out / ".DS_Store").write_bytes(b"\0")
    (out / ".gitkeep").write_text("")
    check_out(out, force=False)
    (out / ".git").mkdir()
    with pytest.raises(InputError, match=r"it holds \.git\)"):
        check_out(out, force=False)
    with pytest.raises(InputError, match="is a file"):
        check_out(out / ".gitkeep", force=True)


# --- a full disk -----------------------------------------------------------------------------

def test_a_full_disk_at_a_checkpoint_is_exit_2_naming_it_and_leaves_no_partial_file(tmp_path, monkeypatch):
    import errno

    import torch

    def half_then_full(obj, f, *args, **kwargs):
        f.write(b"\0" * 4096)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", half_then_full)
    result = run(tmp_path)
    assert result.exit_code == 2, result.output
    flat = " ".join(result.stderr.split())
    assert re.search(r"teacher: cannot write .*\.partial/teacher-\w+/teacher_resnet10t\.pt: No space left on device "
                     r"\(.* free there\)", flat), flat
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and ".tmp" in p.name]
    assert not (tmp_path / "cache" / "teacher").exists()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["passed"] is False and "No space left" in manifest["error"]


def test_torchs_own_words_for_a_full_disk_become_an_oserror_naming_the_checkpoint(tmp_path, monkeypatch):
    """On a real disk that fills, torch.save says "[enforce fail at inline_container.cc]
    unexpected pos ..." (a RuntimeError) rather than passing on the write's OSError."""
    import errno

    import torch

    from edgekiln.system import disk

    def torch_on_a_full_disk(obj, f, *args, **kwargs):
        f.write(b"\0" * 1024)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 5044288 vs 5044184")

    monkeypatch.setattr(torch, "save", torch_on_a_full_disk)
    monkeypatch.setattr(disk, "free_bytes", lambda path: 0)
    with pytest.raises(OSError) as e:
        disk.save_torch({"w": torch.zeros(3)}, tmp_path / "loop.pt")
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "loop.pt")
    assert list(tmp_path.iterdir()) == []  # no temporary file left
    monkeypatch.setattr(disk, "free_bytes", lambda path: 10**9)  # room left: a real bug, raised as it is
    with pytest.raises(RuntimeError, match="unexpected pos"):
        disk.save_torch({"w": torch.zeros(3)}, tmp_path / "loop.pt")


def test_a_disk_without_room_for_a_loops_checkpoints_stops_before_training(tmp_path, monkeypatch):
    from edgekiln.system import disk

    monkeypatch.setattr(disk, "free_bytes", lambda path: 100_000)
    result = run(tmp_path)
    assert result.exit_code == 2, result.output
    flat = " ".join(result.stderr.split())
    assert re.search(r"teacher resnet10t's epoch checkpoints needs about [\d.]+ MB in .*\.partial.* and that disk "
                     r"has 97.7 KB free", flat), flat
    assert "epoch 1/1" not in flat


def test_a_library_that_fails_on_a_full_disk_in_its_own_words_is_exit_2(tmp_path, monkeypatch):
    from edgekiln.stages import result as stage_results
    from edgekiln.system import disk

    def full(*args, **kwargs):
        monkeypatch.setattr(disk, "free_bytes", lambda path: 0)
        raise RuntimeError("Error while serializing: I/O error")  # safetensors' wording, no errno

    monkeypatch.setattr(stage_results, "save_bundle", full)
    result = run(tmp_path)
    assert result.exit_code == 2, result.output
    flat = " ".join(result.stderr.split())
    assert "teacher: RuntimeError: Error while serializing: I/O error: the disk under" in flat
    assert "is full (0 B free)" in flat


# --- signals -----------------------------------------------------------------------------------

@pytest.mark.parametrize("signum, code", [("SIGTERM", 143), pytest.param("SIGINT", 130, marks=pytest.mark.slow)])
def test_a_signal_stops_the_run_with_a_manifest_that_says_where_and_a_rerun_resumes(tmp_path, signum, code):
    """A real signal to a real child process, sent while it distils. (SIGINT takes the same
    path: its exit code is checked in-process below; its own run is in the slow suite.)"""
    import signal
    import subprocess
    import sys
    import time

    config = tmp_path / "quick.toml"
    config.write_text(textwrap.dedent(QUICK.format(teacher_extra="")).replace(
        "[student]\nepochs = 1", "[student]\nepochs = 12"))  # distillation lasts a few seconds
    argv = ["run", str(config), "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]
    child = subprocess.Popen([sys.executable, "-m", "edgekiln.interfaces.cli", *argv], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env={**os.environ, "COLUMNS": "200"})
    lines = []
    for line in child.stdout:
        lines.append(line)
        if "distill" in line and "─" in line:  # the stage's rule: it has begun
            time.sleep(0.5)
            child.send_signal(getattr(signal, signum))
            break
    rest, _ = child.communicate(timeout=300)
    output = "".join(lines) + rest
    assert child.returncode == code, output
    assert f"interrupted by {signum} during stage distill" in " ".join(output.split())
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["error"] == "interrupted" and manifest["passed"] is False
    assert manifest["interrupted"] == {"signal": signum, "stage": "distill"}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder
    assert not any((tmp_path / "cache" / ".tmp").iterdir())  # no temporary cache entry
    resumed = CliRunner().invoke(app, argv)
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["passed"] is True


@pytest.mark.parametrize("signum, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_inside_a_run_a_signal_is_an_exception_with_the_shells_exit_code(signum, code):
    import signal

    from edgekiln.system.interrupts import Interrupted, raising

    before = signal.getsignal(getattr(signal, signum))
    with pytest.raises(Interrupted) as stopped, raising():
        os.kill(os.getpid(), getattr(signal, signum))
        for _ in range(10_000_000):  # the handler runs between two bytecodes
            pass
    assert stopped.value.signal == signum and stopped.value.exit_code == code
    assert signal.getsignal(getattr(signal, signum)) is before  # the caller's handler is back


# --- manifests read by diff, check and report ----------------------------------------------

COMPLETE = json.loads((Path(__file__).parent / "data" / "complete_manifest.json").read_text())


def _release(folder, manifest):
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.mark.parametrize("command", ["diff", "check", "report"])
def test_a_manifest_with_a_wrong_typed_field_is_exit_2_naming_it(tmp_path, command):
    bad = copy.deepcopy(COMPLETE)
    bad["artifacts"][1]["test_accuracy"] = "81.1"
    new = _release(tmp_path / "new", bad)
    args = [str(_release(tmp_path / "base", COMPLETE)), str(new)] if command == "diff" else [str(new)]
    result = CliRunner().invoke(app, [command, *args])
    assert result.exit_code == 2, result.output
    assert "artifacts[1].test_accuracy = '81.1': input should be a valid number" in " ".join(result.stderr.split())


def test_a_predictions_file_of_the_wrong_length_is_exit_2(tmp_path):
    from edgekiln.system.files import sha256

    def with_predictions(folder, drop):
        release = _release(folder, COMPLETE)
        labels = list(range(10)) * 36
        top1 = {"ios": labels[:len(labels) - drop], "android": labels}
        (release / "predictions.json").write_text(json.dumps({"split": "test", "labels": labels, "top1": top1}))
        manifest = copy.deepcopy(COMPLETE)
        manifest["predictions"]["sha256"] = sha256(release / "predictions.json")
        (release / "manifest.json").write_text(json.dumps(manifest))
        return release

    result = CliRunner().invoke(app, ["diff", str(with_predictions(tmp_path / "base", 0)),
                                      str(with_predictions(tmp_path / "new", 5))])
    assert result.exit_code == 2, result.output
    assert "top1.ios has 355 predictions for 360 labels" in " ".join(result.stderr.split())


def test_an_artifact_record_cut_down_to_its_name_is_not_comparable_never_no_regression(tmp_path):
    cut = copy.deepcopy(COMPLETE)
    cut["artifacts"][1] = {"target": cut["artifacts"][1]["target"], "format": cut["artifacts"][1]["format"]}
    result = CliRunner().invoke(app, ["diff", str(_release(tmp_path / "base", COMPLETE)),
                                      str(_release(tmp_path / "new", cut)), "--json", str(tmp_path / "d.json")])
    assert result.exit_code == 2, result.output
    flat = " ".join(result.stdout.split())  # the comparison is a result: stdout
    assert "NO REGRESSION" not in flat and "NOT COMPARABLE" in flat
    assert "target android is not comparable: the new run's record has no size_bytes, accuracy and test_accuracy" in flat


# --- configs that would ship an untrained model, or cannot be read -------------------------

@pytest.mark.parametrize("section, says", [("student", "student.epochs = 0 would ship a student that was never "
                                                       "trained"),
                                           ("teacher", "teacher.epochs = 0 would distil from resnet10t untrained")])
def test_zero_epochs_for_a_model_that_would_ship_untrained_is_exit_2(tmp_path, section, says):
    text = textwrap.dedent(QUICK.format(teacher_extra=""))
    old = {"student": "[student]\nepochs = 1", "teacher": '["resnet10t"]\nepochs = 1'}[section]
    assert old in text
    text = text.replace(old, old.replace("epochs = 1", "epochs = 0"))
    config = tmp_path / "zero.toml"
    config.write_text(text)
    for argv in (["validate", str(config)], ["run", str(config), "--out", str(tmp_path / "out"),
                                             "--cache-dir", str(tmp_path / "cache")]):
        result = CliRunner().invoke(app, argv)
        assert result.exit_code == 2, result.output
        assert says in " ".join(result.stderr.split())
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("nesting", ["table", "array"])
def test_a_config_nested_thousands_deep_is_exit_2(tmp_path, nesting):
    deep = ("[" + ".".join(f"k{i}" for i in range(1000)) + "]\nx = 1\n" if nesting == "table"
            else "x = " + "[" * 5000 + "]" * 5000 + "\n")
    config = tmp_path / "deep.toml"
    config.write_text(deep)
    result = CliRunner().invoke(app, ["validate", str(config)])
    assert result.exit_code == 2, result.output
    assert "nested" in result.stderr and "deep" in result.stderr


def test_a_signal_during_a_checkpoint_write_takes_effect_when_the_write_ends(tmp_path, monkeypatch):
    """torch.save writes through a Python callback; a signal raised inside it would come out
    as torch's RuntimeError (exit 3). Found by tests/fault_probe.py: SIGINT mid-checkpoint."""
    import signal

    import torch

    from edgekiln.system import disk
    from edgekiln.system.interrupts import Interrupted, raising

    real = torch.save

    def signalled_mid_write(obj, f, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # arrives while torch is writing
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", signalled_mid_write)
    with pytest.raises(Interrupted), raising():
        disk.save_torch({"w": torch.zeros(1000)}, tmp_path / "loop.pt")
    assert torch.load(tmp_path / "loop.pt", weights_only=True)["w"].shape == (1000,)  # written whole, then stopped
    assert [p.name for p in tmp_path.iterdir()] == ["loop.pt"]
