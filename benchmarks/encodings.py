"""Latency-aware encoding: what `encoding = "auto"` chooses per target, against always
shipping INT8 (what a user gets without it), in the same run.

    .venv/bin/python benchmarks/encodings.py [--out DIR] [--size 224] [--skip-pipeline | --skip-latency]

Part 1, the pipeline: the digits pipeline (mobilenetv3_small_100, 32 px) with three targets
asking for "auto": the x86 server (measured on this host in onnxruntime), the Pixel 3
(TFLite, estimated: no phone here) and the iPhone 15 Pro (Core ML, estimated). Prints every
candidate's size, runtime accuracy and p50, the winner, and its p50 against INT8's.

Part 2, latency only at `--size` px (default 224, the issue's figure): an untrained
mobilenetv3_small_100 written in every ONNX and TFLite encoding and timed on this host,
the way the pipeline's host runner does (2 threads, 100 runs). Accuracy is not meaningful
for untrained weights and is not reported. Writes results.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = """
[data]
source = "digits"
image_size = 32
seed = 0

[teacher]
candidates = ["resnet10t"]
epochs = 4

[student]
arch = "mobilenetv3_small_100"
epochs = 10
lr = 3e-3

[prune]
macs_ratio = 0.7
finetune_epochs = 2

[budget]
max_drop_total = 100.0

[budget.max_drop]
export = 2.0

[[targets]]
name = "server-x86"
profile = "x86-server-avx2"
encoding = "auto"

[[targets]]
name = "android"
profile = "pixel-3-cpu"
allow_estimate = true
encoding = "auto"

[[targets]]
name = "iphone"
profile = "iphone-15-pro-ane"
encoding = "auto"
"""


def pipeline(work: Path) -> list[dict]:
    config = work / "auto.toml"
    config.write_text(CONFIG)
    started = time.perf_counter()
    edgekiln = Path(sys.executable).with_name("edgekiln")
    run = subprocess.run([str(edgekiln), "run", str(config), "--out", str(work / "out"),
                          "--cache-dir", str(work / "cache")], capture_output=True, text=True)
    if run.returncode not in (0, 1) or not (work / "out" / "manifest.json").is_file():
        sys.exit(f"pipeline failed ({run.returncode}):\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}")
    print(f"pipeline: exit {run.returncode} in {time.perf_counter() - started:.0f} s")
    manifest = json.loads((work / "out" / "manifest.json").read_text())
    rows = []
    print("\n| target | profile | encoding | size KB | accuracy % | p50 ms | latency from | ships |")
    print("|---|---|---|---|---|---|---|---|")
    for artifact in manifest["artifacts"]:
        choice = artifact["encoding_choice"]
        for c in choice["candidates"]:
            p50 = "-" if c["p50_ms"] is None else f"{c['p50_ms']:.3f}"
            ships = "**yes**" if c["encoding"] == choice["chosen"] else ("over budget" if c["over_budget"] else "")
            print(f"| {artifact['target']} | {artifact['profile']} | {c['encoding']} | {c['size_bytes'] / 1e3:.0f} | "
                  f"{c['accuracy']:.2f} | {p50} | {c['latency_source'] or 'not measured'} | {ships} |")
        int8 = next(c for c in choice["candidates"] if c["encoding"] == "int8")
        chosen = next(c for c in choice["candidates"] if c["encoding"] == choice["chosen"])
        ratio = None if not (int8["p50_ms"] and chosen["p50_ms"]) else int8["p50_ms"] / chosen["p50_ms"]
        rows.append({"target": artifact["target"], "chosen": choice["chosen"], "why": choice["why"],
                     "int8_over_chosen_p50": ratio, "candidates": choice["candidates"]})
    print()
    for r in rows:
        ratio = "-" if r["int8_over_chosen_p50"] is None else f"{r['int8_over_chosen_p50']:.2f}x"
        print(f"- {r['target']}: {r['chosen']} ships; INT8 p50 / chosen p50 = {ratio}. {r['why']}")
    return rows


def host_latency(size: int, work: Path) -> list[dict]:
    import numpy as np
    import timm
    import torch

    from edgekiln.targets import get_format
    from edgekiln.targets.profiles import host_profile
    from edgekiln.targets.runners import host

    torch.manual_seed(0)
    model = timm.create_model("mobilenetv3_small_100", num_classes=1000).eval()
    example = torch.randn(1, 3, size, size)
    calibration = np.random.default_rng(0).standard_normal((32, 3, size, size)).astype(np.float32)
    rows = []
    print(f"\nmobilenetv3_small_100 at {size} px on this host (2 threads, 100 runs):\n")
    print("| format | encoding | size KB | p50 ms | p90 ms | p50 / fp32 p50 |")
    print("|---|---|---|---|---|---|")
    for fmt_name in ("onnx", "tflite"):
        fmt = get_format(fmt_name)
        profile = host_profile(fmt_name, threads=2)  # 100 runs after 10 warm-up runs
        fp32 = None
        for encoding in fmt.ENCODINGS:
            path = work / f"mbv3_{size}.{encoding}{fmt.SUFFIX}"
            fmt.export(model, example, calibration, path, {}, encoding)
            latency = host.measure(path, profile).latency_ms
            fp32 = fp32 or latency["p50"]
            rows.append({"format": fmt_name, "encoding": encoding, "size_bytes": path.stat().st_size, **latency})
            print(f"| {fmt_name} | {encoding} | {path.stat().st_size / 1e3:.0f} | {latency['p50']:.2f} | "
                  f"{latency['p90']:.2f} | {latency['p50'] / fp32:.2f}x |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument("--skip-latency", action="store_true", help="part 1 only")
    args = parser.parse_args()
    work = args.out or Path(tempfile.mkdtemp(prefix="edgekiln-encodings-"))
    work.mkdir(parents=True, exist_ok=True)
    results = {"pipeline": None if args.skip_pipeline else pipeline(work),
               "host_latency": None if args.skip_latency else host_latency(args.size, work)}
    (work / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\nresults: {work / 'results.json'}")


if __name__ == "__main__":
    main()
