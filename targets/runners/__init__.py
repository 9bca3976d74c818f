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


def check_reachable(profile: Profile) -> None:
    """DeviceUnreachable when `profile` measures on a device (adb, ssh) that does not answer
    now; host and estimate runners always can."""
    if profile.runner.kind in ("adb", "ssh"):
        importlib.import_module(f"edgekiln.targets.runners.{profile.runner.kind}").reachable(profile)


def measure(artifact: Path, profile: Profile, features: CostFeatures | None, precision: str,
            allow_estimate: bool = False) -> Measurement:
    """Latency (and peak memory where the runner can tell) of `artifact` on `profile`'s device.
    An unreachable device falls back to the estimate runner when `allow_estimate` or the
    profile's `runner.fallback` says so; otherwise DeviceUnreachable propagates."""
    kind = profile.runner.kind
    runner = importlib.import_module(f"edgekiln.targets.runners.{kind}")
    if kind == "estimate":
        return runner.measure(artifact, profile, features, precision)
    try:
        return runner.measure(artifact, profile)
    except DeviceUnreachable as e:
        if not (allow_estimate or profile.runner.fallback == "estimate") or profile.estimate is None:
            raise
        from edgekiln.targets.runners import estimate

        result = estimate.measure(artifact, profile, features, precision)
        result.notes.insert(0, f"{kind} runner could not reach the device ({e}); estimated instead")
        return result
