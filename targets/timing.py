"""Latency measurement of one inference call: warm-up, timed runs, percentiles."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np


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
    for _ in range(warmup):
        call()
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        call()
        times[i] = time.perf_counter() - start
    ms = times * 1000.0
    return Latency(
        p50=float(np.percentile(ms, 50)),
        p90=float(np.percentile(ms, 90)),
        mean=float(ms.mean()),
        std=float(ms.std()),
        runs=runs,
    )
