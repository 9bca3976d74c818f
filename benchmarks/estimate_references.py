"""Build the reference tables that calibrate the `estimate` runner, and report its error.

    .venv/bin/python benchmarks/estimate_references.py --published ../shared/latency_references.csv [--skip-host]

1. Published phone latencies (the shared CSV, each row with its source) are matched to
   their timm architecture, whose cost features are counted here (random weights; the
   features depend only on the architecture and input size) and written to
   targets/profiles/<profile>.references.csv.
2. For x86-server-avx2, the references are measured on this host: ONNX fp32 and INT8 QDQ
   artifacts of timm models at 224 px (and some at 64 and 32 px), timed by the host
   runner (2 threads).
3. For every profile: the estimate's in-sample and leave-one-out error on its own table.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np
import timm
import torch

from edgekiln.targets.cost import cost_features
from edgekiln.targets.profiles import SHIPPED_DIR, load_profile
from edgekiln.targets.runners import estimate, host

# Published model names -> (timm architecture).
TIMM_NAMES = {
    "MobileNetV3-Large 1.0": "mobilenetv3_large_100", "MobileNetV3-Large 0.75": "mobilenetv3_large_075",
    "MobileNetV3-Small 1.0": "mobilenetv3_small_100", "MobileNetV3-Small 0.75": "mobilenetv3_small_075",
    "MobileNetV1 1.0": "mobilenetv1_100", "MobileNetV2 1.0": "mobilenetv2_100", "MobileNetV2": "mobilenetv2_100",
    "MobileNetV4-Conv-S": "mobilenetv4_conv_small", "MobileNetV4-Conv-M": "mobilenetv4_conv_medium",
    "MobileNetV4-Hybrid-M": "mobilenetv4_hybrid_medium", "MobileNetV4-Conv-L": "mobilenetv4_conv_large",
    "MobileNetV4-Hybrid-L": "mobilenetv4_hybrid_large", "MobileViT-XS": "mobilevit_xs", "ResNet-50": "resnet50",
}
PRECISIONS = {"float": "float", "int8": "int8", "fp16": "fp16", "W8A8": "w8a8"}

# profile -> which published rows calibrate it: (device, runtime, threads or None for any)
PUBLISHED = {
    "pixel-3-cpu": ("Pixel 3", "TFLite CPU", "1 (large core)"),
    "android-midrange-cpu": ("Pixel 2", "TFLite CPU", "1 (large core)"),
    "pixel-6-cpu": ("Pixel 6", "TFLite CPU", None),
    "iphone-15-pro-ane": ("iPhone 15 Pro", "Core ML", None),
}
HOST_MODELS = ("mobilenetv3_small_075", "mobilenetv3_small_100", "mobilenetv3_large_075", "mobilenetv3_large_100",
               "mobilenetv2_100", "mobilenetv1_100", "mobilenetv4_conv_small", "mobilevit_xxs", "mobilevit_xs",
               "efficientnet_b0", "resnet18", "resnet50")
# Small inputs too, so the host table covers models like the digits demo's (32 px, < 1 MMAC).
HOST_SMALL = {64: ("mobilenetv3_small_050", "mobilenetv3_small_100", "mobilenetv3_large_100", "mobilenetv4_conv_small",
                   "mobilevit_xxs", "resnet18"),
              32: ("mobilenetv3_small_050", "mobilenetv3_small_100", "mobilenetv4_conv_small", "resnet18")}
COLUMNS = ("model", "precision", "input_px", "threads", "latency_ms", "source",
           "macs", "depthwise_macs", "params", "activations")

_features_cache: dict = {}


def features(arch: str, size: int):
    if (arch, size) not in _features_cache:
        torch.manual_seed(0)
        _features_cache[arch, size] = cost_features(timm.create_model(arch), size)
    return _features_cache[arch, size]


def write(profile: str, rows: list[dict]) -> Path:
    path = SHIPPED_DIR / f"{profile}.references.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def published_rows(published: Path, device: str, runtime: str, threads: str | None) -> list[dict]:
    rows, source = [], None
    with open(published, newline="") as f:
        for r in csv.DictReader(f):
            # The CSV says "same" for the source of the row above it, whichever device that was.
            source = source if r["source"].startswith("same") and source else r["source"]
            if r["device"] != device or r["runtime"] != runtime or (threads and r["threads"] != threads):
                continue
            arch, size = TIMM_NAMES[r["model"]], int(r["input_px"])
            rows.append({"model": arch, "precision": PRECISIONS[r["precision"]], "input_px": size,
                         "threads": r["threads"], "latency_ms": float(r["latency_ms"]),
                         "source": f"{r['device']} {r['runtime']}: {source}", **features(arch, size).to_dict()})
            rows[-1].pop("image_size")
    return rows


def host_rows() -> list[dict]:
    from edgekiln.targets import get_format
    from edgekiln.targets.formats import onnx as onnx_module

    profile = load_profile("x86-server-avx2")
    rows = []
    jobs = [(arch, 224) for arch in HOST_MODELS] + [(a, size) for size, archs in HOST_SMALL.items() for a in archs]
    for arch, size in jobs:
        torch.manual_seed(0)
        model = timm.create_model(arch).eval()
        calibration = np.random.default_rng(0).standard_normal((8, 3, size, size)).astype(np.float32)
        example = torch.from_numpy(calibration[:1])
        with tempfile.TemporaryDirectory() as tmp:
            fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
            onnx_module.export_float(model, example, fp32)
            get_format("onnx").export_int8(model, example, calibration, int8, {})
            for precision, path in (("float", fp32), ("int8", int8)):
                latency = host.measure(path, profile).latency_ms
                rows.append({"model": arch, "precision": precision, "input_px": size,
                             "threads": profile.runtime.threads, "latency_ms": round(latency["p50"], 3),
                             "source": "measured on this host by benchmarks/estimate_references.py",
                             **{k: v for k, v in features(arch, size).to_dict().items() if k != "image_size"}})
                print(f"  host {arch} {size} px {precision}: {latency['p50']:.3f} ms", flush=True)
    return rows


def report(profile_name: str) -> None:
    profile = load_profile(profile_name)
    refs = estimate.load_references(profile.references_path())
    for precision in sorted({r.precision for r in refs}):
        rows = [r for r in refs if r.precision == precision]
        calibrated = estimate.calibrate(profile, precision)  # the fit the estimate runner uses
        how = ", ".join(calibrated.model.columns) if calibrated.model.precision == precision else (
            f"float fit x {calibrated.ratio:.3f} (mean ratio of {estimate.paired_ratio(refs, precision)[1]} pairs)")
        in_sample = estimate.error_pct([(r, calibrated.predict(r.features)) for r in rows])
        loo_pairs = estimate.leave_one_out(refs, precision)
        loo = estimate.error_pct(loo_pairs)
        worst = max((abs(p - r.latency_ms) / r.latency_ms * 100 for r, p in loo_pairs), default=None)
        print(f"| {profile_name} | {precision} | {len(rows)} | {how} | {in_sample:.1f} | "
              + ("-" if loo is None else f"{loo:.1f}") + " | " + ("-" if worst is None else f"{worst:.0f}") + " |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--published", type=Path, help="the shared CSV of published latencies")
    parser.add_argument("--skip-host", action="store_true", help="keep the host table as it is")
    args = parser.parse_args()
    if args.published:
        for profile, selector in PUBLISHED.items():
            print(f"wrote {write(profile, published_rows(args.published, *selector))}")
    if not args.skip_host:
        print(f"wrote {write('x86-server-avx2', host_rows())}")
    print("\n| profile | precision | rows | model columns | in-sample error % | leave-one-out error % | worst LOO % |")
    print("|---|---|---|---|---|---|---|")
    for profile in (*PUBLISHED, "x86-server-avx2"):
        report(profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
