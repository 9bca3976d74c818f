"""The `adb` runner: push the artifact to an Android device and time it there with its
format's benchmark binary (TFLite's `benchmark_model`, onnxruntime's `onnxruntime_perf_test`,
ExecuTorch's `executor_runner`...), which the user installs on the device once (the format
names the default path; a profile's runner.benchmark_tool overrides it)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from edgekiln.targets import get_format
from edgekiln.targets.errors import DeviceUnreachable, RunnerFailed
from edgekiln.targets.profiles import Profile

DEFAULT_REMOTE_DIR = "/data/local/tmp/edgekiln"
_TIMEOUT_S = 600


def adb_base(profile: Profile) -> list[str]:
    """`adb [-s SERIAL]`, from EDGEKILN_ADB / EDGEKILN_ADB_SERIAL / ANDROID_SERIAL or the profile."""
    adb = os.environ.get("EDGEKILN_ADB") or profile.runner.adb
    found = shutil.which(adb)
    if found is None:
        raise DeviceUnreachable(f"adb executable {adb!r} not found (set EDGEKILN_ADB or runner.adb)")
    serial = os.environ.get("EDGEKILN_ADB_SERIAL") or os.environ.get("ANDROID_SERIAL") or profile.runner.serial
    return [found] + (["-s", serial] if serial else [])


def reachable(profile: Profile, timeout_s: float = 10.0) -> None:
    """DeviceUnreachable unless adb is installed and lists a device ready for `profile`: the
    check `validate` and the run's start make, so a missing phone stops a run before training."""
    base = adb_base(profile)
    try:
        state = subprocess.run([*base, "get-state"], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise DeviceUnreachable(f"{' '.join(base)} get-state did not answer in {timeout_s:g} s") from None
    if state.returncode != 0 or state.stdout.strip() != "device":
        raise DeviceUnreachable(f"no Android device ready ({(state.stderr or state.stdout).strip() or 'none listed'})")


def benchmark_command(profile: Profile, remote_artifact: str) -> list[str]:
    """The on-device command (after `adb shell`) that times `remote_artifact`: the format's."""
    return get_format(profile.format).adb_command(profile, remote_artifact)


def _adb(base: list[str], *args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([*base, *args], capture_output=True, text=True, timeout=_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise DeviceUnreachable(f"{' '.join([*base, *args])} did not answer in {_TIMEOUT_S} s") from None


def measure(artifact: Path, profile: Profile):
    from edgekiln.targets.runners import Measurement

    fmt = get_format(profile.format)
    fmt.adb_tool(profile)  # RunnerFailed before touching the device when the format has no adb command
    base = adb_base(profile)
    state = _adb(base, "get-state")
    if state.returncode != 0 or state.stdout.strip() != "device":
        why = (state.stderr or state.stdout).strip() or f"state {state.stdout.strip()!r}"
        raise DeviceUnreachable(f"no Android device ready ({why})")
    remote_dir = profile.runner.remote_dir or DEFAULT_REMOTE_DIR
    remote = f"{remote_dir}/{artifact.name}"
    for args in (("shell", "mkdir", "-p", remote_dir), ("push", str(artifact), remote)):
        done = _adb(base, *args)
        if done.returncode != 0:
            raise RunnerFailed(f"{' '.join([*base, *args])} failed: {(done.stderr or done.stdout).strip()}")
    command = benchmark_command(profile, remote)
    done = _adb(base, "shell", *command)
    output = done.stdout + "\n" + done.stderr
    if done.returncode != 0:
        raise RunnerFailed(f"adb shell {' '.join(command)} exited {done.returncode}: "
                           + " ".join(output.split()[-40:]))
    latency, memory, notes = fmt.parse_adb_output(output, profile)
    serial = base[2] if len(base) > 2 else "the only attached device"
    return Measurement(source="device", runner="adb", device=f"{profile.device} via adb ({serial})",
                       latency_ms=latency, peak_memory_mb=memory, tool=Path(command[0]).name, notes=notes,
                       extra={"command": ["adb", "shell", *command]})
