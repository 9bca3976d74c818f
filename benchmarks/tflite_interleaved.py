"""TFLite artifacts timed against each other on this host, interleaved in one process (each
round times every artifact in turn, so load the host picks up falls on all of them alike):
the median over rounds of each one's p50, and its ratio to the first's.

    .venv/bin/python benchmarks/tflite_interleaved.py plain=OUT1/model.tflite int16=OUT2/model.tflite ...

Host-side only: XNNPACK on this x86 CPU, one thread. A phone's kernels (int16 ones above
all) are other kernels; the profile estimates do not see the difference at all.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from edgekiln.targets.profiles import Profile, RunnerSpec, RuntimeOptions
from edgekiln.targets.runners import host


def main(argv: list[str]) -> None:
    named = [arg.split("=", 1) for arg in argv]
    profile = Profile(name="host-tflite-1-thread", device="this host", format="tflite",
                      runtime=RuntimeOptions(threads=1), runner=RunnerSpec(kind="host", runs=300))
    timing = host.interleave([Path(path) for _, path in named], profile)
    medians = [statistics.median(rounds) for rounds in timing.round_p50_ms]
    print(f"{timing.device}, {timing.tool}, {timing.rounds} rounds x {timing.runs_per_round} runs; "
          + ("; ".join(timing.notes) or "host quiet"))
    print("| artifact | size | p50 ms (median of rounds) | vs the first |")
    print("|---|---|---|---|")
    for (name, path), median in zip(named, medians):
        print(f"| {name} | {Path(path).stat().st_size / 1e6:.2f} MB | {median:.3f} | {median / medians[0]:.2f}x |")


if __name__ == "__main__":
    main(sys.argv[1:])
