"""Nothing lost, part three (issue 46): each case of the third fault probe, reproduced as the
probe ran it, with the exit code, the message and the files left. Re-runs of the session's
tiny pipeline are warm (every stage cached)."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgekiln.interfaces.cli import app


def cli(*args, **kwargs):
    return CliRunner().invoke(app, [str(a) for a in args], **kwargs)


def flat(result) -> str:
    return " ".join((result.stderr + result.stdout).split())


def _listing(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _earlier_run(run, tmp_path: Path, name: str = "release") -> Path:
    """A copy of the session's finished run: an earlier release in its own folder."""
    root, _, _ = run
    out = tmp_path / name
    shutil.copytree(root / "out", out)
    return out


# --- 1. cache gc and verify delete only an edgekiln cache's own entries ---------------------------

@pytest.mark.parametrize("command", [["gc", "--max-size", "0"], ["verify", "--discard"]])
def test_cache_commands_on_a_folder_that_is_not_a_cache_delete_nothing(tmp_path, command):
    home = tmp_path / "home"
    (home / "projects" / "app1" / "src").mkdir(parents=True)
    (home / "projects" / "app1" / "src" / "main.py").write_text("code")
    (home / ".tmp" / "old").mkdir(parents=True)  # a user's own .tmp: not a cache's temporaries
    os.utime(home / ".tmp" / "old", (0, 0))
    before = _listing(home)
    result = cli("cache", *command[:1], "--cache-dir", home, *command[1:])
    assert result.exit_code == 2, result.output
    assert "is not an edgekiln cache" in flat(result) and "nothing was read or deleted" in flat(result)
    assert _listing(home) == before and (home / ".tmp" / "old").is_dir()


@pytest.mark.parametrize("command", [["gc", "--max-size", "0"], ["verify"]])
def test_cache_commands_on_a_folder_that_does_not_exist_are_exit_2(tmp_path, command):
    result = cli("cache", command[0], "--cache-dir", tmp_path / "nowhere", *command[1:])
    assert result.exit_code == 2 and "does not exist" in flat(result), result.output


def test_gc_in_a_real_cache_removes_its_entries_and_nothing_put_beside_them(tmp_path):
    from edgekiln.engine.cache import MARKER, StageCache, stage_key

    cache = StageCache(tmp_path / "cache")
    key = stage_key("teacher", "v1", {}, [])
    with cache.writing("teacher", key) as work:
        (work / "weights.bin").write_bytes(b"\0" * 100)
    assert (tmp_path / "cache" / MARKER).is_file()
    (tmp_path / "cache" / "teacher" / "my-notes").mkdir()  # not a stage key's form: never an entry
    (tmp_path / "cache" / "teacher" / "my-notes" / "n.txt").write_text("mine")
    result = cli("cache", "gc", "--cache-dir", tmp_path / "cache", "--max-size", "0")
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "cache" / "teacher" / key).exists()
    assert (tmp_path / "cache" / "teacher" / "my-notes" / "n.txt").read_text() == "mine"


def test_a_cache_written_before_the_marker_is_still_recognized(run):
    from edgekiln.engine.cache import MARKER, is_cache

    root, _, _ = run
    assert is_cache(root / "cache")
    tag = (root / "cache" / MARKER).read_text()
    (root / "cache" / MARKER).unlink()
    try:
        assert is_cache(root / "cache")  # its lock folder and entries with their records
    finally:
        (root / "cache" / MARKER).write_text(tag)


# --- 2. the swap completes or leaves the previous run in place, whatever signal arrives -----------

def test_a_signal_between_the_swaps_renames_waits_for_both(tmp_path, monkeypatch):
    from edgekiln.system import disk
    from edgekiln.system.interrupts import Interrupted, raising

    old, new = tmp_path / "out", tmp_path / "new"
    old.mkdir()
    (old / "manifest.json").write_text("old")
    new.mkdir()
    (new / "manifest.json").write_text("new")
    real = os.rename
    calls = []

    def rename_then_signal(src, dst):
        real(src, dst)
        calls.append(dst)
        if len(calls) == 1:  # the old run is aside, the new one not yet in place
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(disk.os, "rename", rename_then_signal)
    with raising(), pytest.raises(Interrupted):
        disk.swap_into_place(new, old)
    assert (old / "manifest.json").read_text() == "new" and len(calls) == 2


def test_a_run_killed_between_the_renames_gets_its_previous_run_back(run, tmp_path):
    """kill -9 there leaves --out missing and the old run aside: the next run, even one refused
    for another reason, puts it back instead of deleting it."""
    from tiny_pipeline import invoke

    root, _, _ = run
    out = _earlier_run(run, tmp_path)
    before = _listing(out)
    aside = tmp_path / ".release.edgekiln-old-0123abcd"
    os.rename(out, aside)  # what the kill left
    (tmp_path / "data-file").write_text("x")  # the refused run: an --out that is a file
    refused = invoke(root / "tiny.toml", tmp_path / "data-file", root / "cache")
    assert refused.exit_code == 2 and aside.is_dir()  # not its --out: left as it is
    overlapping = invoke(root / "tiny.toml", out, out / "cache")  # refused after the recovery: --out holds the cache
    assert overlapping.exit_code == 2 and "overlap" in flat(overlapping), overlapping.output
    assert "restored" in flat(overlapping)
    assert _listing(out) == before and not aside.exists()


def test_ctrl_c_during_a_rerun_keeps_the_previous_run_whole(run, tmp_path, monkeypatch):
    from tiny_pipeline import invoke

    from edgekiln.engine import runner
    from edgekiln.system.interrupts import Interrupted

    root, _, _ = run
    out = _earlier_run(run, tmp_path)
    before = _listing(out)

    def interrupted(*args, **kwargs):
        raise Interrupted(signal.SIGINT)

    monkeypatch.setattr(runner, "run_pipeline", interrupted)
    result = invoke(root / "tiny.toml", out, root / "cache")
    assert result.exit_code == 130, result.output
    assert "keeps the previous run whole" in flat(result)
    assert _listing(out) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# --- 3. a config.toml the user put or edited in an output folder is not edgekiln's ---------------

def test_a_users_config_toml_in_an_earlier_output_is_refused_not_deleted(run, tmp_path):
    from tiny_pipeline import invoke

    root, _, _ = run
    out = _earlier_run(run, tmp_path)
    (out / "config.toml").write_text("# my notes on this release\n")
    result = invoke(root / "tiny.toml", out, root / "cache")
    assert result.exit_code == 2, result.output
    assert "config.toml is not the config its run wrote there" in flat(result)
    assert (out / "config.toml").read_text() == "# my notes on this release\n"


def test_an_edited_kept_config_runs_again_into_its_own_folder(run, tmp_path):
    from edgekiln.interfaces import api

    root, _, _ = run
    out = tmp_path / "kept"
    api.run(root / "tiny.toml", out, root / "cache", keep_config=True)
    edited = (out / "config.toml").read_text() + "\n# edited by hand\n"
    (out / "config.toml").write_text(edited)
    again = cli("run", out / "config.toml", "--out", out, "--cache-dir", root / "cache")
    assert again.exit_code == 0, again.output
    assert (out / "config.toml").read_text() == edited
    elsewhere = cli("run", root / "tiny.toml", "--out", out, "--cache-dir", root / "cache")  # not that config
    assert elsewhere.exit_code == 0, elsewhere.output  # the run wrote this config.toml: it is its own


# --- 4. --out through a symlink writes into its target --------------------------------------------

def test_a_symlinked_out_writes_into_its_target_and_stays_a_link(run, tmp_path):
    from tiny_pipeline import invoke

    root, _, _ = run
    target = _earlier_run(run, tmp_path, "releases-v1")
    (target / "manifest.json").write_text(json.dumps({**json.loads((target / "manifest.json").read_text()),
                                                      "created": "an earlier run"}))
    link = tmp_path / "current"
    link.symlink_to(target)
    result = invoke(root / "tiny.toml", link, root / "cache")
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and link.resolve() == target.resolve()
    assert json.loads((target / "manifest.json").read_text())["created"] != "an earlier run"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# --- 5. check reads nothing outside OUT -----------------------------------------------------------

@pytest.mark.parametrize("where", ["absolute", "parent", "link"])
def test_check_refuses_artifact_paths_outside_out(run, tmp_path, where):
    out = _earlier_run(run, tmp_path)
    manifest = json.loads((out / "manifest.json").read_text())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(out / manifest["artifacts"][0]["path"], elsewhere / "model.onnx")
    if where == "absolute":
        listed = str(elsewhere / "model.onnx")
    elif where == "parent":
        listed = "../elsewhere/model.onnx"
    else:
        (out / "linked.onnx").symlink_to(elsewhere / "model.onnx")
        listed = "linked.onnx"
    manifest["artifacts"][0]["path"] = listed
    (out / "manifest.json").write_text(json.dumps(manifest))
    result = cli("check", out)
    assert result.exit_code == 2, result.output
    assert "artifacts[0].path" in flat(result) and "nothing outside it is read" in flat(result)


# --- 6. images of every bit depth decode to the values they hold -----------------------------------

def test_a_16_bit_greyscale_png_decodes_to_its_values_not_white(tmp_path):
    from PIL import Image

    from edgekiln.calibration.images import read_square

    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    decoded = read_square(tmp_path / "ramp.png", 64)[:, :, 0].astype(int)
    assert abs(decoded - (ramp / 257).round()).max() <= 1  # the ramp, at 8 bits
    assert decoded[0, 0] == 0 and decoded[-1, -1] == 255


def test_an_image_without_an_8_bit_scale_is_refused_naming_it(tmp_path):
    from PIL import Image

    from edgekiln.data.image_files import ImageFiles
    from edgekiln.errors import InputError

    Image.fromarray(np.full((8, 8), 2.5, dtype=np.float32)).save(tmp_path / "hdr.tif")
    with pytest.raises(InputError, match=r"data.path: image .*hdr.tif holds floats outside \[0, 1\]"):
        ImageFiles(tmp_path, ["hdr.tif"], 8).decode(0)


# --- 7. output never depends on the console's encoding ---------------------------------------------

def test_a_console_that_cannot_print_unicode_changes_nothing(run, tmp_path):
    root, _, _ = run
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    for argv in (["validate", root / "tiny.toml"],
                 ["run", root / "tiny.toml", "--out", tmp_path / "out", "--cache-dir", root / "cache"]):
        done = subprocess.run([sys.executable, "-m", "edgekiln", *map(str, argv)], env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "PASSED" in done.stdout and json.loads((tmp_path / "out" / "manifest.json").read_text())["passed"]


# --- 8. a full disk, bytes or inodes, is exit 2 naming it ------------------------------------------

def test_a_cache_disk_without_free_inodes_is_exit_2_naming_it(run, tmp_path, monkeypatch):
    from tiny_pipeline import invoke

    from edgekiln.engine import cache as stage_cache
    from edgekiln.system import disk

    root, _, _ = run

    def no_inodes(root):  # the first file a run creates in its cache
        raise OSError(errno.ENOSPC, "No space left on device", str(root / stage_cache.MARKER))

    monkeypatch.setattr(stage_cache, "mark", no_inodes)
    monkeypatch.setattr(disk, "free_inodes", lambda path: 0)
    cache = tmp_path / "cache"
    result = invoke(root / "tiny.toml", tmp_path / "out", cache)
    assert result.exit_code == 2, result.output
    said = flat(result)
    assert "cannot write" in said and "CACHEDIR.TAG" in said and "no free inodes there" in said


def test_a_full_disk_met_where_no_code_names_it_is_exit_2_not_a_bug(tmp_path):
    import typer

    from edgekiln.interfaces.exits import exit_codes

    with pytest.raises(typer.Exit) as ended, exit_codes():
        try:
            raise OSError(errno.EDQUOT, "Disk quota exceeded", str(tmp_path / "x.bin"))
        except OSError as e:
            raise RuntimeError("a library's own words") from e
    assert ended.value.exit_code == 2


# --- 9. the partly handled cases -------------------------------------------------------------------

def test_a_second_run_writing_the_same_out_at_once_is_refused(run, tmp_path):
    from tiny_pipeline import invoke

    from edgekiln.engine import outputs

    root, _, _ = run
    out = tmp_path / "out"
    with outputs._only_writer(out):  # another run holds it
        result = invoke(root / "tiny.toml", out, root / "cache")
    assert result.exit_code == 2 and "is being written by another edgekiln run" in flat(result), result.output
    assert not out.exists()
    assert invoke(root / "tiny.toml", out, root / "cache").exit_code == 0  # free again
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_pickled_module_as_weights_says_what_to_save(tmp_path):
    import torch

    from edgekiln.errors import InputError
    from edgekiln.training import modeling

    model = modeling.create("resnet10t", 10)
    torch.save(model, tmp_path / "whole.pt")
    with pytest.raises(InputError) as refused:
        modeling.read_state_dict(tmp_path / "whole.pt")
    said = str(refused.value)
    assert "save_file(model.state_dict()" in said and "weights_only=False" not in said


def test_a_config_with_a_utf8_bom_reads_as_without(run, tmp_path):
    root, _, _ = run
    config = tmp_path / "bom.toml"
    config.write_bytes(b"\xef\xbb\xbf" + (root / "tiny.toml").read_bytes())
    result = cli("validate", config)
    assert result.exit_code == 0, result.output
    config.write_bytes(b"[data]\nsource = \"\xff\"\n")
    bad = cli("validate", config)
    assert bad.exit_code == 2 and "is not UTF-8 text" in flat(bad)


def test_bench_on_a_fifo_is_refused_instead_of_hanging(tmp_path):
    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    result = cli("bench", fifo, "--profile", "x86-server-avx2")
    assert result.exit_code == 2 and "is not a regular file" in flat(result), result.output


# --- 10. CLIP prompts longer than the text tower's positions ---------------------------------------

def test_clip_prompts_longer_than_the_text_tower_are_cut_and_said(tmp_path, capsys):
    from test_zero_shot import tiny_clip

    from edgekiln.training import zero_shot

    clip = tiny_clip(tmp_path / "clip", positions=16)
    model = zero_shot.create(f"clip:{clip}", ["zero", "one"], ["a blurry photo of the number {}, written by hand."])
    assert model.head.weight.shape[0] == 2
    assert "reads 16 token positions" in " ".join(capsys.readouterr().out.split())
