"""The `host` runner: the artifact's own runtime on this machine, in a child process, so
the peak memory it reports is the runtime's and the pipeline's threads do not interfere."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

from edgekiln.targets import get_format, runtime_bench
from edgekiln.targets.errors import RunnerFailed, RuntimeUnavailable
from edgekiln.targets.profiles import Profile


def worker_command(python: str, script: str, fmt: str, artifact: str, profile: Profile) -> list[str]:
    """The runtime_bench.py command line for `artifact` under `profile`'s runtime options."""
    options = [arg for key, value in profile.runtime_options().items() for arg in ("--option", f"{key}={value}")]
    return [python, script, fmt, artifact, "--threads", str(profile.runtime.threads), *options,
            "--warmup", str(profile.runner.warmup_runs), "--runs", str(profile.runner.runs)]


def parse_worker_output(stdout: str, command: list[str], stderr: str = "") -> dict:
    """The JSON object runtime_bench.py prints on its last line."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = " ".join((stderr or stdout).split()[-60:])
        raise RunnerFailed(f"{' '.join(command)} printed no result: {tail}") from None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure(artifact: Path, profile: Profile):
    from edgekiln.targets.runners import Measurement

    why = get_format(profile.format).runtime_unavailable()
    if why is not None:
        raise RuntimeUnavailable(f"the host runner cannot time {profile.format} here: {why}")
    command = worker_command(sys.executable, runtime_bench.__file__, profile.format, str(artifact), profile)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = " ".join(done.stderr.split()[-60:])
        raise RunnerFailed(f"host runner: {' '.join(command[2:4])} failed: {tail}")
    result = parse_worker_output(done.stdout, command, done.stderr)
    return Measurement(source="host", runner="host", device=f"this host ({_cpu_name()})",
                       latency_ms=result["latency_ms"], peak_memory_mb=result["peak_memory_mb"],
                       tool=result["runtime"], extra={"threads": profile.runtime.threads})
