"""Wall time of a pipeline run from an empty cache (what a user without a stage cache
pays on every run) against a re-run of the same config, in one process tree.

    .venv/bin/python benchmarks/cold_vs_warm.py [examples/digits.toml]

Prints a Markdown table row per run and the warm/cold ratio.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed_run(config: Path, out: Path, cache: Path) -> tuple[float, dict]:
    edgekiln = Path(sys.executable).with_name("edgekiln")
    started = time.perf_counter()
    proc = subprocess.run([str(edgekiln), "run", str(config), "--out", str(out), "--cache-dir", str(cache)],
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"run failed with exit {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return seconds, json.loads((out / "manifest.json").read_text())


def main() -> None:
    config = Path(sys.argv[1] if len(sys.argv) > 1 else "examples/digits.toml")
    with tempfile.TemporaryDirectory() as tmp:
        cache, out = Path(tmp) / "cache", Path(tmp) / "out"
        cold, manifest = timed_run(config, out, cache)
        warm, again = timed_run(config, out, cache)
    assert all(s["cached"] for s in again["stages"]), "warm run recomputed a stage"
    print("| run | wall s | stages computed |\n|---|---|---|")
    print(f"| cold (empty cache) | {cold:.1f} | {sum(not s['cached'] for s in manifest['stages'])} |")
    print(f"| warm (same config) | {warm:.1f} | {sum(not s['cached'] for s in again['stages'])} |")
    print(f"\nwarm / cold = {warm / cold:.3f}")
    print("\nstage compute seconds (cold): " + ", ".join(
        f"{s['name']} {s['compute_seconds']:.1f}" for s in manifest["stages"]))
    print("teacher candidates: " + ", ".join(
        f"{c['name']} {c['accuracy']:.2f}" + (" (chosen)" if c["chosen"] else "")
        for c in manifest["teacher"]["candidates"]))
    print("accuracy: teacher {:.2f}, ".format(manifest["teacher"]["accuracy"]) + ", ".join(
        f"{s['name']} {s['accuracy']:.2f}" for s in manifest["stages"][1:]))
    for a in manifest["artifacts"]:
        lat = a["latency_ms"]
        print(f"artifact {a['target']} ({a['format']}): {a['size_bytes'] / 1e3:.0f} KB, {a['accuracy']:.2f}% "
              f"[{a['accuracy_source']}], p50/p90 "
              + (f"{lat['p50']:.3f}/{lat['p90']:.3f} ms [{a['latency_source']}]" if lat else "not measured"))


if __name__ == "__main__":
    main()
