"""Latency runners: measure an artifact on its profile's device, or estimate it.

- host: the artifact's own runtime on this machine, in a child process;
- adb: an Android device, with TFLite's benchmark_model or onnxruntime_perf_test;
- ssh: a Linux board or a Mac, with the remote python running runtime_bench.py;
- estimate: the profile's cost model, calibrated on its reference table.

Every figure carries its source (host | device | estimate), so a report never passes
an estimate or a server's timing off as a phone's.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from typing import TYPE_CHECKING

from edgekiln.targets.errors import DeviceUnreachable
from edgekiln.targets.profiles import Profile

if TYPE_CHECKING:  # a runner's reachability is checked by `validate`, which imports no torch
    from edgekiln.targets.cost import CostFeatures

@dataclass
class Measurement:
    source: str  # host | device | estimate
    runner: str  # host | adb | ssh | estimate
    device: str  # what was measured on, in words
    latency_ms: dict | None  # p50, p90 (None where the tool gives none), mean, std, runs
    peak_memory_mb: float | None
    tool: str  # the program that produced the figures
    notes: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # runner-specific detail (estimate error, command)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Interleaved:
    """Candidates timed in turns over the same rounds: each one's p50 per round, in ms."""
    runner: str
    device: str
    tool: str
    rounds: int
    runs_per_round: int
    round_p50_ms: list[list[float]]  # per artifact, in the order given
    notes: list[str] = field(default_factory=list)


def interleave(artifacts: list[Path], profile: Profile) -> Interleaved | None:
    """`artifacts` (one format, `profile`'s) timed interleaved on the profile's device, for a
    choice among them that can tell a real difference from run-to-run noise. None for the
    estimate runner: an estimate has no run-to-run noise to measure."""
    kind = profile.runner.kind
    if kind == "estimate":
        return None
    runner = importlib.import_module(f"edgekiln.targets.runners.{kind}")
    if hasattr(runner, "interleave"):
        return runner.interleave(artifacts, profile)
    return _interleave_by_calls(runner, artifacts, profile)


def _interleave_by_calls(runner, artifacts: list[Path], profile: Profile) -> Interleaved:
    """For a runner whose tool times one artifact per call (adb's benchmark_model): one call
    per artifact and round, the first of a round rotating; each call's p50 is its round's."""
    rounds: list[list[float]] = [[] for _ in artifacts]
    last = None
    for r in range(profile.runner.choice_rounds):
        for k in range(len(artifacts)):
            i = (r + k) % len(artifacts)
            last = runner.measure(artifacts[i], profile)
            rounds[i].append(last.latency_ms["p50"])
    return Interleaved(runner=last.runner, device=last.device, tool=last.tool, rounds=profile.runner.choice_rounds,
                       runs_per_round=profile.runner.runs, round_p50_ms=rounds,
                       notes=[f"one {last.tool} call per artifact and round"])


def check_reachable(profile: Profile) -> None:
    """DeviceUnreachable when `profile` measures on a device (adb, ssh) that does not answer
    now; host and estimate runners always can."""
    if profile.runner.kind in ("adb", "ssh"):
        importlib.import_module(f"edgekiln.targets.runners.{profile.runner.kind}").reachable(profile)


def measure(artifact: Path, profile: Profile, features: CostFeatures | None, precision: str,
            allow_estimate: bool = False, other_layers: dict[str, int] | None = None) -> Measurement:
    """Latency (and peak memory where the runner can tell) of `artifact` on `profile`'s device.
    An unreachable device falls back to the estimate runner when `allow_estimate` or the
    profile's `runner.fallback` says so; otherwise DeviceUnreachable propagates."""
    kind = profile.runner.kind
    runner = importlib.import_module(f"edgekiln.targets.runners.{kind}")
    if kind == "estimate":
        return runner.measure(artifact, profile, features, precision, other_layers)
    try:
        return runner.measure(artifact, profile)
    except DeviceUnreachable as e:
        if not (allow_estimate or profile.runner.fallback == "estimate") or profile.estimate is None:
            raise
        from edgekiln.targets.runners import estimate

        result = estimate.measure(artifact, profile, features, precision, other_layers)
        result.notes.insert(0, f"{kind} runner could not reach the device ({e}); estimated instead")
        return result
