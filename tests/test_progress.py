"""Progress in logs: off a terminal (a CI log) long work prints lines, one per epoch and one
every LOG_EVERY_S while it is under way, instead of a bar that only a terminal draws."""

import time

from edgekiln import progress


def test_off_a_terminal_the_epoch_bar_prints_a_line_per_epoch_with_how_far_it_is(capsys):
    assert not progress.console.is_terminal  # pytest captures stdout: what a CI log is
    with progress.epoch_bar() as bar:
        task = bar.add_task("distil mobilenetv3_small_050", total=3, status="")
        for epoch in range(3):
            bar.update(task, advance=1, status=f"loss {1.0 / (epoch + 1):.3f}")
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        "  distil mobilenetv3_small_050: 1/3, loss 1.000", "  distil mobilenetv3_small_050: 2/3, loss 0.500",
        "  distil mobilenetv3_small_050: 3/3, loss 0.333"]


def test_a_throttled_bar_prints_at_most_one_line_per_interval_and_always_the_last(capsys):
    with progress.epoch_bar(every=60.0) as bar:
        task = bar.add_task("layer sensitivity", total=50, status="")
        for layer in range(50):
            bar.update(task, advance=1, status=f"layer{layer}")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("  layer sensitivity: 1/50") and "50/50" in lines[1]


def test_a_log_never_goes_quiet_while_an_epoch_or_a_conversion_is_under_way(capsys, monkeypatch):
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.05)
    with progress.epoch_bar() as bar:
        bar.add_task("teacher resnet10t", total=6, completed=2, status="")
        time.sleep(0.3)  # an epoch that takes a while
    beats = capsys.readouterr().out.splitlines()
    assert len(beats) >= 2 and beats[0].startswith("  teacher resnet10t: 2/6 done, the next under way")
    with progress.status("  android-cpu: converting to tflite (int8)") as status:
        time.sleep(0.2)
        status.update("  android-cpu: timing on pixel-3-cpu")
        time.sleep(0.2)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "  android-cpu: converting to tflite (int8)"
    assert any(line.startswith("  android-cpu: converting to tflite (int8) (still working, ") for line in lines)
    assert lines[-1].startswith("  android-cpu: timing on pixel-3-cpu (still working, ")
    time.sleep(0.2)
    assert capsys.readouterr().out == ""  # the heartbeat stopped with the work


SPY = '''
import builtins, os, sys
from typer.testing import CliRunner
from edgekiln.interfaces.cli import app
assert "tqdm" not in sys.modules
seen = {}
real = builtins.__import__
def spy(name, *args, **kwargs):
    if name.split(".")[0] == "tqdm":
        seen.setdefault("TQDM_DISABLE", os.environ.get("TQDM_DISABLE"))
    return real(name, *args, **kwargs)
builtins.__import__ = spy
CliRunner().invoke(app, sys.argv[1:])
print(seen)
'''


def test_the_converters_own_progress_bars_are_off_before_anything_imports_tqdm(tmp_path):
    """tqdm reads TQDM_DISABLE when it is imported: `run` switches the converters' bars off
    (coremltools' "Running MIL ... pipeline" frames in a CI log) before torch's imports
    bring tqdm in, unless --verbose keeps them."""
    import subprocess
    import sys

    env = {k: v for k, v in __import__("os").environ.items() if k != "TQDM_DISABLE"}
    for args, expected in ((["run", "missing.toml"], "1"), (["run", "missing.toml", "--verbose"], None)):
        done = subprocess.run([sys.executable, "-c", SPY, *args], capture_output=True, text=True, cwd=tmp_path,
                              env=env, timeout=300)
        assert done.stdout.strip().splitlines()[-1] == repr({"TQDM_DISABLE": expected}), done.stdout + done.stderr


_NATIVE_LOGS = r"""
import os, sys
from edgekiln.interfaces.quiet import filter_native_stderr
assert filter_native_stderr()
for line in (b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
             b"I0000 00:00:1796591217.839825   25218 port.cc:153] oneDNN custom operations are on.\n",
             b"W0000 00:00:1796591217.839825   25218 op_registry.cc:12] an op registered twice\n",
             b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n",
             b"E0000 00:00:1796591217.839825   25218 converter.cc:9] the op FOO is not supported\n",
             b"a line of a library's own\n"):
    os.write(2, line)  # as native code writes: straight to file descriptor 2
print("edgekiln's own error", file=sys.stderr)
os.system("echo 'I0000 00:00:1.0 7 child.cc:1] a child process logs too' >&2")
raise SystemExit(3)
"""


def test_the_converters_native_info_lines_are_dropped_and_errors_and_ours_come_through():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _NATIVE_LOGS], capture_output=True, text=True, timeout=120)
    assert done.returncode == 3
    # Python's own stderr writes directly (never behind the filter), so only the set is certain, not the order
    assert sorted(done.stderr.splitlines()) == sorted([
        "edgekiln's own error", "E0000 00:00:1796591217.839825   25218 converter.cc:9] the op FOO is not supported",
        "a line of a library's own"]), done.stderr
