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


def worker_command(python: str, script: str, fmt: str, artifact: str | list[str], profile: Profile) -> list[str]:
    """The runtime_bench.py command line for `artifact` under `profile`'s runtime options; for
    a list of artifacts, their interleaved timing in the profile's `choice_rounds`."""
    options = [arg for key, value in profile.runtime_options().items() for arg in ("--option", f"{key}={value}")]
    common = [python, script, fmt, *([artifact] if isinstance(artifact, str) else artifact),
              "--threads", str(profile.runtime.threads), *options, "--warmup", str(profile.runner.warmup_runs)]
    if isinstance(artifact, str):
        return [*common, "--runs", str(profile.runner.runs)]
    return [*common, "--rounds", str(profile.runner.choice_rounds), "--runs", str(runs_per_round(profile))]


def runs_per_round(profile: Profile) -> int:
    """Calls per model and round of an interleaved timing: a fifth of the profile's runs, so
    that 15 rounds time each model three times as long as a single measurement does."""
    return max(5, profile.runner.runs // 5)


def parse_worker_output(stdout: str, command: list[str], stderr: str = "") -> dict:
    """The JSON object runtime_bench.py prints on its last line."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = " ".join((stderr or stdout).split()[-60:])
        raise RunnerFailed(f"{' '.join(command)} printed no result: {tail}") from None


# The instruction sets that decide how fast INT8 runs on an x86 CPU, by their /proc/cpuinfo
# flag: without VNNI, onnxruntime's INT8 kernels gain little over float (BENCHMARKS.md).
ISA_FLAGS = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_vnni": "AVX-512 VNNI", "avx_vnni": "AVX-VNNI",
             "amx_int8": "AMX-INT8"}


def _cpuinfo() -> tuple[str | None, set[str]]:
    name, flags = None, set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name is None:
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return name, flags


def host_isa(flags: set[str] | None = None) -> list[str]:
    """This CPU's instruction sets that matter for INT8 (ISA_FLAGS), and "no VNNI" on an x86
    CPU without any; empty where /proc/cpuinfo does not say (not Linux, not x86)."""
    flags = _cpuinfo()[1] if flags is None else flags
    found = [label for flag, label in ISA_FLAGS.items() if flag in flags]
    if found and not any("VNNI" in label for label in found):
        found.append("no VNNI")
    return found


def host_device() -> str:
    """How a host measurement names the machine: its CPU and the ISA that decides INT8's speed
    ("this host (AMD EPYC: AVX2, AVX-512, AVX-512 VNNI)"), so a table or a manifest says which
    kind of x86 host measured it."""
    name = _cpuinfo()[0] or platform.processor() or platform.machine()
    isa = host_isa()
    return f"this host ({name}: {', '.join(isa)})" if isa else f"this host ({name})"


def _run_worker(artifact: str | list[str], profile: Profile) -> dict:
    why = get_format(profile.format).runtime_unavailable()
    if why is not None:
        raise RuntimeUnavailable(f"the host runner cannot time {profile.format} here: {why}")
    command = worker_command(sys.executable, runtime_bench.__file__, profile.format, artifact, profile)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = " ".join(done.stderr.split()[-60:])
        raise RunnerFailed(f"host runner: {' '.join(command[2:4])} failed: {tail}")
    return parse_worker_output(done.stdout, command, done.stderr)


def peak_memory(artifact: Path, profile: Profile) -> float | None:
    """`artifact`'s peak memory (MB above the loaded runtime) in its format's runtime on this
    host, from a short run (no timing to trust), or None where that runtime does not run
    here. What the interpreter allocates for a model (its arena, its weights) is the model's
    and the runtime version's, not the CPU's: an estimated device borrows this figure."""
    if get_format(profile.format).runtime_unavailable() is not None:
        return None
    short = profile.model_copy(update={"runner": profile.runner.model_copy(update={"runs": 5, "warmup_runs": 1})})
    return _run_worker(str(artifact), short)["peak_memory_mb"]


def interleave(artifacts: list[Path], profile: Profile):
    """The artifacts timed interleaved in one child process (runtime_bench.interleaved_ms)."""
    from edgekiln.targets import host_load
    from edgekiln.targets.runners import Interleaved

    with host_load.Window() as window:
        result = _run_worker([str(a) for a in artifacts], profile)
    busy = window.load.busy(profile.runtime.threads)
    # Interleaved rounds share whatever load there was, so their comparison stands; the
    # absolute figures do not, and the record says so.
    return Interleaved(runner="host", device=host_device(), tool=result["runtime"], rounds=result["rounds"],
                       runs_per_round=result["runs_per_round"],
                       round_p50_ms=[result["round_p50_ms"][str(a)] for a in artifacts],
                       notes=[] if busy is None else [f"host busy while timed interleaved: {busy}"])


# A busy host is timed again after a pause, within this many seconds in all
# (EDGEKILN_BUSY_WAIT_S); then the quietest timing stands, marked busy.
BUSY_WAIT_S = 30.0
_PAUSE_S = 3.0


def measure(artifact: Path, profile: Profile):
    """The artifact timed on this host in rounds, with what the rest of the host did
    meanwhile. A busy host (others' processes on the cores the runtime needs, a hypervisor
    stealing, rounds that disagree) is timed again after a pause, within BUSY_WAIT_S; if it
    stays busy, the quietest timing is kept with `host_busy` saying why, and the gates pass
    a latency budget on it only where its slowest round is within, never fail one (gates.py)."""
    import os
    import time

    from edgekiln.targets import host_load
    from edgekiln.targets.runners import Measurement

    threads = profile.runtime.threads
    deadline = time.monotonic() + float(os.environ.get("EDGEKILN_BUSY_WAIT_S", BUSY_WAIT_S))
    tries = []
    while True:
        with host_load.Window() as window:
            result = _run_worker(str(artifact), profile)
        busy = window.load.busy(threads) or host_load.rounds_disagree(result["latency_ms"].get("round_p50") or [])
        tries.append((busy, window.load, result))
        if busy is None or time.monotonic() + _PAUSE_S >= deadline:
            break
        time.sleep(_PAUSE_S)
    busy, load, result = min(tries, key=lambda t: (t[0] is not None, t[1].others_cores or 0.0))
    notes = [] if busy is None else [f"host busy: {busy}; timed {len(tries)} times over "
                                     f"{sum(t[1].seconds for t in tries) + _PAUSE_S * (len(tries) - 1):.0f} s"]
    return Measurement(source="host", runner="host", device=host_device(),
                       latency_ms=result["latency_ms"], peak_memory_mb=result["peak_memory_mb"],
                       tool=result["runtime"], notes=notes,
                       extra={"threads": threads, "isa": host_isa(), "host_load": load.to_dict(),
                              "host_busy": busy, "timings": len(tries)})
