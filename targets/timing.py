"""Latency measurement of one inference call: warm-up, timed runs, percentiles."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

from edgekiln.targets.runtime_bench import measure_ms


@dataclass(frozen=True)
class Latency:
    p50: float
    p90: float
    mean: float
    std: float
    runs: int

    def to_dict(self) -> dict:
        return asdict(self)


def measure(call: Callable[[], object], warmup: int, runs: int) -> Latency:
    """Time `call` `runs` times after `warmup` untimed calls; figures in milliseconds."""
    return Latency(**measure_ms(call, warmup, runs))
