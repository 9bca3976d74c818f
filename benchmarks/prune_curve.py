"""Accuracy, MACs and host latency across pruning ratios, on digits, in one run.

    .venv/bin/python benchmarks/prune_curve.py [--out DIR] [--arch mobilenetv3_small_100]

The pipeline runs once per MACs ratio on one cache (teacher and distillation shared), each
pruned in one step with 2 epochs of KD recovery, to an INT8 ONNX artifact measured by the
host runner on the x86-server-avx2 profile (this machine, 2 threads). Prints a Markdown
table and writes prune_curve.png and prune_curve.json into DIR (`--curve-only`: nothing more).

Then one more run prunes to a latency instead of a ratio (`--latency-ms`, default: the
curve's p50 at 0.45), measured on the host at every step (`[prune] measure = true`, 3 steps)
under `max_drop.prune = 8`, and prints its steps: it stops at the target or at the budget,
whichever comes first (`--latency-only --latency-ms X`: only this run).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

RATIOS = [1.0, 0.7, 0.45, 0.25]

CONFIG = """
[data]
source = "digits"
image_size = 32
seed = 0

[teacher]
candidates = ["resnet10t"]
epochs = 4

[student]
arch = "{arch}"
epochs = 10
lr = 3e-3

[prune]
{prune}
finetune_epochs = 2

[budget]
max_drop_total = 100.0
{budget}

[[targets]]
name = "server"
profile = "x86-server-avx2"
latency_runs = 300
"""


def plot(rows: list[dict], arch: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    macs = [r["macs"] / 1e6 for r in rows]
    fig, (acc_ax, lat_ax) = plt.subplots(1, 2, figsize=(10, 4))
    acc_ax.plot(macs, [r["pruned"] for r in rows], "o-", label="pruned student (torch, float)")
    acc_ax.plot(macs, [r["onnx"] for r in rows], "s--", label="INT8 ONNX (onnxruntime)")
    acc_ax.set(xlabel="MMACs", ylabel="val accuracy %", title=f"{arch} on digits: accuracy vs MACs")
    acc_ax.legend()
    lat_ax.plot(macs, [r["p50_ms"] for r in rows], "o-")
    for r, m in zip(rows, macs):
        lat_ax.annotate(f"{r['ratio']:g}", (m, r["p50_ms"]), textcoords="offset points", xytext=(4, 4))
    lat_ax.set(xlabel="MMACs", ylabel="p50 ms (host, 2 threads)", title="INT8 ONNX latency vs MACs (label: ratio)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", default="mobilenetv3_small_100")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--latency-ms", type=float, default=None, help="the latency-target run's p50 target")
    parser.add_argument("--latency-only", action="store_true", help="only the latency-target run (needs --latency-ms)")
    parser.add_argument("--curve-only", action="store_true", help="only the curve across ratios")
    args = parser.parse_args()
    if args.latency_only and args.latency_ms is None:
        parser.error("--latency-only needs --latency-ms")
    if args.latency_only and args.curve_only:
        parser.error("--latency-only and --curve-only exclude each other")
    edgekiln = Path(sys.executable).with_name("edgekiln")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.out or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = []
        for ratio in [] if args.latency_only else RATIOS:
            config = work / f"prune-{ratio}.toml"
            config.write_text(CONFIG.format(arch=args.arch, prune=f"macs_ratio = {ratio}", budget=""))
            out = work / f"prune-{ratio}"
            proc = subprocess.run([str(edgekiln), "run", str(config), "--out", str(out), "--cache-dir",
                                   str(work / "cache")], capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"ratio {ratio}: exit {proc.returncode}\n{proc.stdout[-2000:]}")
            manifest = json.loads((out / "manifest.json").read_text())
            stages = {s["name"]: s for s in manifest["stages"]}
            [onnx] = manifest["artifacts"]
            rows.append({"ratio": ratio, "macs": stages["prune"]["macs"], "params": stages["prune"]["params"],
                         "distilled": stages["distill"]["accuracy"], "pruned": stages["prune"]["accuracy"],
                         "onnx": onnx["accuracy"], "p50_ms": onnx["latency_ms"]["p50"],
                         "p90_ms": onnx["latency_ms"]["p90"]})
        if rows:
            (work / "prune_curve.json").write_text(json.dumps(rows, indent=1))
            plot(rows, args.arch, work / "prune_curve.png")
        if not args.curve_only:
            target = args.latency_ms or round({r["ratio"]: r["p50_ms"] for r in rows}[0.45], 3)
            latency_run = _latency_run(edgekiln, work, args.arch, target)
    print("| MACs ratio | MACs | params | pruned float % | INT8 ONNX % | host p50 ms | host p90 ms |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['ratio']:g} | {r['macs'] / 1e6:.2f}M | {r['params'] / 1e6:.2f}M | {r['pruned']:.2f} | "
              f"{r['onnx']:.2f} | {r['p50_ms']:.3f} | {r['p90_ms']:.3f} |")
    if args.curve_only:
        return
    print(f"\nPruning to p50 <= {target} ms, measured on the host at each step: {latency_run['stopped']}")
    print("| step | MACs | params | host p50 ms (INT8 ONNX) | source | float % | note |")
    print("|---|---|---|---|---|---|---|")
    for s in latency_run["steps"]:
        print(f"| {s['step']} | {s['macs'] / 1e6:.2f}M | {s['params'] / 1e6:.2f}M | {s['latency_ms']:.3f} | "
              f"{s['latency_source']} | {s['accuracy']:.2f} | {s['note']} |")
    if latency_run["onnx"] is None:
        print(f"exit {latency_run['exit']}: no artifact (the prune stage failed its gate)")
    else:
        print(f"exit {latency_run['exit']}; shipped INT8 ONNX: {latency_run['onnx']:.2f}%, "
              f"host p50 {latency_run['p50_ms']:.3f} ms")


def _latency_run(edgekiln: Path, work: Path, arch: str, target: float) -> dict:
    config = work / "prune-latency.toml"
    config.write_text(CONFIG.format(
        arch=arch, prune=f'latency_ms = {target}\nprofile = "x86-server-avx2"\nmeasure = true\nsteps = 3',
        budget="\n[budget.max_drop]\nprune = 8.0"))
    out = work / "prune-latency"
    proc = subprocess.run([str(edgekiln), "run", str(config), "--out", str(out), "--cache-dir", str(work / "cache")],
                          capture_output=True, text=True)
    if not (out / "manifest.json").exists():
        sys.exit(f"latency run: exit {proc.returncode}\n{proc.stdout[-2000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    onnx = manifest["artifacts"][0] if manifest["artifacts"] else None  # none when pruning failed its gate
    return {**manifest["prune"], "exit": proc.returncode, "onnx": onnx and onnx["accuracy"],
            "p50_ms": onnx and onnx["latency_ms"]["p50"]}


if __name__ == "__main__":
    main()
