"""The `adb` runner: push the artifact to an Android device and time it there with TFLite's
`benchmark_model` (.tflite) or onnxruntime's `onnxruntime_perf_test` (.onnx), both of
which the user installs on the device once (paths in the profile)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

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


def benchmark_command(profile: Profile, remote_artifact: str) -> list[str]:
    """The on-device command (after `adb shell`) that times `remote_artifact`."""
    rt, runner = profile.runtime, profile.runner
    if profile.format == "tflite":
        delegate = {"xnnpack": ["--use_xnnpack=true"], "gpu": ["--use_gpu=true"],
                    "nnapi": ["--use_nnapi=true"], "none": ["--use_xnnpack=false"]}[rt.delegate]
        return [runner.benchmark_model, f"--graph={remote_artifact}", f"--num_threads={rt.threads}",
                f"--warmup_runs={runner.warmup_runs}", f"--num_runs={runner.runs}",
                "--report_peak_memory_footprint=true", *delegate]
    if profile.format == "onnx":
        # -I: random input bound by the tool; -m times -r N: exactly N timed runs.
        return [runner.onnxruntime_perf_test, "-m", "times", "-r", str(runner.runs), "-x", str(rt.threads),
                "-e", rt.execution_provider, "-I", remote_artifact]
    raise RunnerFailed(f"the adb runner cannot run {profile.format} artifacts (only tflite and onnx)")


_STAT = re.compile(r"count=(\d+)\s.*?avg=([\d.e+]+)\s+std=([\d.e+]+)(?:.*?median=([\d.e+]+))?(?:.*?p95=([\d.e+]+))?")


def parse_benchmark_model(text: str) -> tuple[dict, float | None, list[str]]:
    """Latency (ms), peak memory (MB) and notes from benchmark_model's log. Its last
    `count=... avg=... std=... [p5= median= p95=]` line is the timed runs (in microseconds)."""
    stats = [m for m in _STAT.finditer(text)]
    if not stats:
        raise RunnerFailed("benchmark_model printed no timing statistics: "
                           + " ".join(text.split()[-40:]))
    count, avg, std, median, p95 = stats[-1].groups()
    notes = []
    if median is not None:
        p50 = float(median) / 1000
    else:
        p50 = float(avg) / 1000
        notes.append("benchmark_model printed no median: p50 is its mean")
    p90 = None
    if p95 is not None:
        p90 = float(p95) / 1000
        notes.append("benchmark_model reports p5/median/p95: the p90 figure is its p95 (an upper bound)")
    peak = re.search(r"Overall peak memory footprint \(MB\) via periodic monitoring:\s*([\d.]+)", text)
    delta = re.search(r"Memory footprint delta from the start of the tool \(MB\):.*?overall=([\d.]+)", text)
    memory = float(peak.group(1)) if peak else float(delta.group(1)) if delta else None
    latency = {"p50": p50, "p90": p90, "mean": float(avg) / 1000, "std": float(std) / 1000, "runs": int(count)}
    return latency, memory, notes


def parse_perf_test(text: str) -> tuple[dict, float | None, list[str]]:
    """Latency (ms) and peak memory (MB) from onnxruntime_perf_test's summary. Percentile
    lines are in seconds ("P50 Latency: 0.0012 s", older builds "P50 Latency is 0.0012 sec")."""
    def seconds(label: str) -> float | None:
        m = re.search(rf"{label} Latency(?::| is)\s*([\d.e+-]+)\s*s", text)
        return None if m is None else float(m.group(1)) * 1000

    mean = re.search(r"Average (?:inference )?time cost:\s*([\d.e+-]+)\s*ms", text)
    runs = re.search(r"Total (?:inference requests|iterations):\s*(\d+)", text)
    if mean is None:
        raise RunnerFailed("onnxruntime_perf_test printed no latency summary: " + " ".join(text.split()[-40:]))
    notes = []
    p50 = seconds("P50")
    if p50 is None:  # builds before percentiles were added print the mean only
        p50 = float(mean.group(1))
        notes.append("onnxruntime_perf_test printed no percentiles: p50 is its mean, p90 unknown")
    peak = re.search(r"Peak working set size:\s*(\d+)\s*bytes", text)
    latency = {"p50": p50, "p90": seconds("P90"), "mean": float(mean.group(1)), "std": None,
               "runs": int(runs.group(1)) if runs else None}
    return latency, None if peak is None else int(peak.group(1)) / 2**20, notes


def _adb(base: list[str], *args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([*base, *args], capture_output=True, text=True, timeout=_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise DeviceUnreachable(f"{' '.join([*base, *args])} did not answer in {_TIMEOUT_S} s") from None


def measure(artifact: Path, profile: Profile):
    from edgekiln.targets.runners import Measurement

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
    parse = parse_benchmark_model if profile.format == "tflite" else parse_perf_test
    latency, memory, notes = parse(output)
    serial = base[2] if len(base) > 2 else "the only attached device"
    return Measurement(source="device", runner="adb", device=f"{profile.device} via adb ({serial})",
                       latency_ms=latency, peak_memory_mb=memory, tool=Path(command[0]).name, notes=notes,
                       extra={"command": ["adb", "shell", *command]})
