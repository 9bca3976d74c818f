"""Two runs of one config on one empty cache, started together, against one run alone.

    .venv/bin/python benchmarks/concurrent_runs.py [CONFIG] [--work DIR]

Without per-stage locks both runs compute every stage (twice the CPU: on a 2-core host,
about twice the wall time); with them the second waits for each stage the first is
computing and re-uses its result. Each run is a fresh `edgekiln run` process. Prints the
wall times, which stages each concurrent run computed, and the ratio.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

EDGEKILN = Path(sys.executable).parent / "edgekiln"


def start(config: Path, out: Path, cache: Path) -> subprocess.Popen:
    return subprocess.Popen([str(EDGEKILN), "run", str(config), "--out", str(out), "--cache-dir", str(cache)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def computed(out: Path) -> list[str]:
    manifest = json.loads((out / "manifest.json").read_text())
    return [s["name"] for s in manifest["stages"] if not s["cached"]]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config", type=Path, nargs="?", default=Path("examples/digits.toml"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/edgekiln-concurrent"))
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    started = time.perf_counter()
    alone = start(args.config, args.work / "alone", args.work / "cache-alone")
    assert alone.wait() == 0, "the run alone failed"
    one = time.perf_counter() - started
    started = time.perf_counter()
    pair = [start(args.config, args.work / f"run{i}", args.work / "cache-shared") for i in (1, 2)]
    codes = [p.wait() for p in pair]
    two = time.perf_counter() - started
    assert codes == [0, 0], f"concurrent runs exited {codes}"
    print(f"| one cold run | {one:.0f} s | computed {', '.join(computed(args.work / 'alone'))} |")
    for i in (1, 2):
        stages = computed(args.work / f"run{i}")
        print(f"| concurrent run {i} | | computed {', '.join(stages) or 'nothing (re-used every stage)'} |")
    print(f"| two concurrent cold runs | {two:.0f} s | {two / one:.2f}x one run |")


if __name__ == "__main__":
    main()
