"""How busy this host was while something was timed on it: the CPU other processes used
(in cores), the share the hypervisor stole, the load average. A latency measured beside a
neighbour's build is the neighbour's figure as much as the artifact's: the host runner
re-times when the host is busy and says so when it stays busy, and the gates pass a budget
on such a measurement only where its slowest round is within it, and never fail one
(load only slows a timing; gates.py).

Linux only (/proc/stat); elsewhere nothing is known and nothing is judged busy."""

from __future__ import annotations

import os
import resource
import time
from dataclasses import asdict, dataclass

# Other processes may use this many cores beside a timing before the host counts as busy
# (a shell, a logger, the kernel's own threads stay well under it).
OTHERS_TOLERATED_CORES = 0.3
STEAL_TOLERATED = 0.1  # share of CPU time the hypervisor may steal
ROUNDS_SPREAD_TOLERATED = 1.3  # slowest over fastest round p50: above it the rounds disagree


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _cpu_jiffies() -> tuple[float, float, float] | None:
    """(busy, total, steal) CPU time of the whole host so far, in seconds."""
    try:
        with open("/proc/stat") as f:
            fields = [float(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0.0] * 8)[:8]
    busy = user + nice + system + irq + softirq
    return busy / hz, (busy + idle + iowait + steal) / hz, steal / hz


def _own_cpu() -> float:
    """CPU seconds this process and its finished children have used."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclass(frozen=True)
class HostLoad:
    """What the rest of the host did during one timing window."""

    cores: int
    seconds: float
    others_cores: float | None  # CPU other processes used, averaged over the window, in cores
    steal_share: float | None  # the share of CPU time the hypervisor took
    load1: float | None  # the 1-minute load average at the end

    def busy(self, threads: int) -> str | None:
        """Why the host was too busy for a timing on `threads` threads, or None."""
        free = None if self.others_cores is None else self.cores - self.others_cores
        if free is not None and self.others_cores > max(OTHERS_TOLERATED_CORES,
                                                         self.cores - threads + OTHERS_TOLERATED_CORES):
            return (f"other processes used {self.others_cores:.1f} of {self.cores} cores (load "
                    f"{self.load1:.1f}), leaving {max(free, 0):.1f} for {threads} thread{'s' if threads > 1 else ''}")
        if self.steal_share is not None and self.steal_share > STEAL_TOLERATED:
            return f"the hypervisor stole {self.steal_share:.0%} of the CPU time"
        return None

    def to_dict(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


class Window:
    """Measures the host around a timing: `with Window() as w: ...` then `w.load`."""

    def __enter__(self) -> "Window":
        self._start = time.monotonic(), _cpu_jiffies(), _own_cpu()
        return self

    def __exit__(self, *exc) -> None:
        t0, jiffies0, own0 = self._start
        seconds = max(time.monotonic() - t0, 1e-6)
        jiffies1, own1 = _cpu_jiffies(), _own_cpu()
        others = steal = None
        if jiffies0 is not None and jiffies1 is not None:
            busy = jiffies1[0] - jiffies0[0]
            total = jiffies1[1] - jiffies0[1]
            others = max(0.0, (busy - (own1 - own0)) / seconds)
            steal = (jiffies1[2] - jiffies0[2]) / total if total > 0 else None
        try:
            load1 = os.getloadavg()[0]
        except OSError:
            load1 = None
        self.load = HostLoad(cores(), seconds, others, steal, load1)


def rounds_disagree(round_p50s: list[float]) -> str | None:
    """Why a timing's rounds disagree beyond their noise, or None."""
    if len(round_p50s) < 2 or min(round_p50s) <= 0:
        return None
    spread = max(round_p50s) / min(round_p50s)
    if spread > ROUNDS_SPREAD_TOLERATED:
        return (f"its rounds' p50 ranged {min(round_p50s):.3g}-{max(round_p50s):.3g} ms ({spread:.2f}x, over "
                f"{ROUNDS_SPREAD_TOLERATED}x)")
    return None
