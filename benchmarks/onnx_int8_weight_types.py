"""Accuracy and host latency of a run's quantized student as INT8 ONNX with each onnxruntime
weight/activation type pairing, beside its fp32 export, timed interleaved in one process.

    make demo   # or any finished run with an ONNX-capable quantize stage in its cache
    .venv/bin/python benchmarks/onnx_int8_weight_types.py out/digits [--cache-dir .edgekiln-cache]
    .venv/bin/python benchmarks/onnx_int8_weight_types.py OUT --tiny   # 3 rounds: that it runs

Why: which INT8 layout is fastest and keeps accuracy depends on the CPU. onnxruntime's U8S8
(int8 weights) uses VNNI where the CPU has it, but saturates on AVX2 without VNNI unless the
weights are 7-bit (reduce_range). The ONNX format chooses per profile (onnx.int8_types); this
measures every pairing on this host, and prints which one that choice makes here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from edgekiln.data.dataset import DataConfig, load_dataset, to_input  # noqa: E402
from edgekiln.stats import accuracy_interval, hits  # noqa: E402
from edgekiln.targets import encodings, get_format  # noqa: E402
from edgekiln.targets.formats import onnx as onnx_format  # noqa: E402
from edgekiln.targets.int8 import Int8Options  # noqa: E402
from edgekiln.targets.profiles import RunnerSpec, host_profile  # noqa: E402
from edgekiln.targets.runners import host  # noqa: E402
from edgekiln.training import modeling  # noqa: E402

VARIANTS = {  # name -> (weight type, reduce_range); activations are uint8 in all
    "U8S8": ("int8", False),
    "U8S8 + reduce_range": ("int8", True),
    "U8U8": ("uint8", False),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--cache-dir", type=Path, default=Path(".edgekiln-cache"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--tiny", action="store_true", help="3 rounds of 10 runs: that it runs")
    args = parser.parse_args(argv)
    manifest = json.loads((args.out_dir / "manifest.json").read_text())
    stages = {s["name"]: s for s in manifest["stages"]}
    quantize = args.cache_dir / "quantize" / stages["quantize"]["key"]
    bundle = modeling.load_bundle(quantize / "model")
    data = load_dataset(DataConfig.model_validate(manifest["config"]["data"]))
    calibration = to_input(torch.from_numpy(np.load(quantize / "calibration.npy")), bundle.mean, bundle.std,
                           bundle.input_size).numpy()
    split, labels = (data.test_x, data.test_y) if data.has_test else (data.val_x, data.val_y)
    images = to_input(split, bundle.mean, bundle.std, bundle.input_size).numpy()
    onnx = get_format("onnx")
    runs = 10 if args.tiny else 60
    profile = host_profile("onnx", args.threads).model_copy(
        update={"runner": RunnerSpec(kind="host", warmup_runs=20, runs=5 * runs,
                                     choice_rounds=3 if args.tiny else args.rounds)})
    chosen = onnx_format.int8_types(profile)
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"fp32": Path(tmp) / "fp32.onnx"}
        onnx.export(bundle.model, bundle.example_input(), calibration, paths["fp32"], {}, "fp32")
        for i, (name, (weights, reduce_range)) in enumerate(VARIANTS.items()):
            paths[name] = Path(tmp) / f"int8_{i}.onnx"
            options = Int8Options(weight_type=weights, reduce_range=reduce_range)
            onnx.export(bundle.model, bundle.example_input(), calibration, paths[name], {}, "int8", options)
        timed = host.interleave(list(paths.values()), profile)
        rows = []
        for (name, path), rounds in zip(paths.items(), timed.round_p50_ms):
            right = hits(onnx.predict(path, images).argmax(1), labels)
            low, high = accuracy_interval(right)
            ratio, paired = encodings.paired(rounds, timed.round_p50_ms[0])
            rows.append((name, float(right.mean() * 100), low, high, path.stat().st_size,
                         statistics.median(rounds), encodings.noise(rounds), ratio, paired))
    print(f"{bundle.arch} ({manifest['config']['data'].get('source', 'folder')} data), "
          f"{len(labels)} {'test' if data.has_test else 'val'} images, onnxruntime, {args.threads} threads, "
          f"batch 1; {timed.device}; {timed.rounds} interleaved rounds of {timed.runs_per_round} runs\n")
    print("| encoding | accuracy % (95% CI) | size KB | host p50 ms (median of rounds) | noise of its rounds | "
          "p50 / fp32, round by round | noise of that ratio |")
    print("|---|---|---|---|---|---|---|")
    for name, acc, low, high, size, p50, noise, ratio, paired in rows:
        print(f"| {name} | {acc:.2f} [{low:.1f}, {high:.1f}] | {size / 1e3:.0f} | {p50:.3f} | {noise:.1%} | "
              f"{ratio:.2f} | {paired:.1%} |")
    print(f"\nint8_types on this host: weight type {chosen[0]}, reduce_range {chosen[1]}: {chosen[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
