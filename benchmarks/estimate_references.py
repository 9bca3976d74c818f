"""Build the phone profiles' reference tables from published latencies, and print every
estimating profile's leave-one-out error table (BENCHMARKS.md, "Latency estimates").

    .venv/bin/python benchmarks/estimate_references.py [--published [CSV]]

1. With --published: the rows of benchmarks/published_latencies.csv (each with its source)
   are matched to their timm architecture, whose cost features are counted here (random
   weights; the features depend only on the architecture and input size), and written to
   targets/profiles/<profile>.references.csv.
2. The x86-server-avx2 table is measured on this host by the calibrate command:
       edgekiln profile calibrate x86-server-avx2 --runner host --out /tmp/x86/x86-server-avx2.toml
       cp /tmp/x86/x86-server-avx2.references.csv targets/profiles/
3. For every profile with a table: per precision, the rows, the model, the leave-one-out
   error (median, mean, worst) and whether its estimates may decide budgets.
4. Data a fit was not chosen on: each phone table's largest source alone predicting the
   table's other sources; whether each table's own rows bear out the bounds' assumption
   (latency rises with every counted cost); and the profile's device as published in another
   setup (another runtime), which stays out of the table, against the table's estimate.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import timm
import torch

from edgekiln.targets.cost import cost_features
from edgekiln.targets.errors import RunnerFailed
from edgekiln.targets.profiles import SHIPPED_DIR, load_profile
from edgekiln.targets.runners import estimate

# Published model names -> (timm architecture).
TIMM_NAMES = {
    "MobileNetV3-Large 1.0": "mobilenetv3_large_100", "MobileNetV3-Large 0.75": "mobilenetv3_large_075",
    "MobileNetV3-Small 1.0": "mobilenetv3_small_100", "MobileNetV3-Small 0.75": "mobilenetv3_small_075",
    "MobileNetV1 1.0": "mobilenetv1_100", "MobileNetV2 1.0": "mobilenetv2_100", "MobileNetV2": "mobilenetv2_100",
    "MobileNetV4-Conv-S": "mobilenetv4_conv_small", "MobileNetV4-Conv-M": "mobilenetv4_conv_medium",
    "MobileNetV4-Hybrid-M": "mobilenetv4_hybrid_medium", "MobileNetV4-Conv-L": "mobilenetv4_conv_large",
    "MobileNetV4-Hybrid-L": "mobilenetv4_hybrid_large", "MobileViT-XS": "mobilevit_xs", "ResNet-50": "resnet50",
    "MobileNetV3-Large minimalistic 1.0": "tf_mobilenetv3_large_minimal_100",
    "MobileNetV3-Small minimalistic 1.0": "tf_mobilenetv3_small_minimal_100",
    "MobileViTv2-1.0": "mobilevitv2_100",
    # The TFLite hosted models' width multipliers of MobileNetV1 (timm builds them with its
    # generator's channel_multiplier) and the AutoML MnasNets (timm's MnasNet-B1, whose
    # ImageNet accuracy matches the table's within a point).
    "MobileNetV1 0.25": "mobilenetv1_025", "MobileNetV1 0.5": "mobilenetv1_050", "MobileNetV1 0.75": "mobilenetv1_075",
    "MnasNet 0.5": "mnasnet_050", "MnasNet 0.75": "mnasnet_075", "MnasNet 1.0": "mnasnet_100",
    # The OVIC benchmark's MobileNetV2 widths (its last 1x1 conv stays 1280 wide, as timm's).
    "MobileNetV2 0.35": "mobilenetv2_035", "MobileNetV2 0.5": "mobilenetv2_050", "MobileNetV2 0.75": "mobilenetv2_075",
    "MnasNet 1.3": "mnasnet_130",
    "EfficientNet-Lite0": "tf_efficientnet_lite0", "EfficientNet-Lite2": "tf_efficientnet_lite2",
}
# Architectures timm has only as a generator's width: name -> (generator, channel multiplier).
WIDTHS = {"mobilenetv1_025": ("_gen_mobilenet_v1", 0.25), "mobilenetv1_050": ("_gen_mobilenet_v1", 0.5),
          "mobilenetv1_075": ("_gen_mobilenet_v1", 0.75), "mnasnet_130": ("_gen_mnasnet_b1", 1.3)}
# W8A16 is Core ML's weight-only INT8 (edgekiln's Core ML INT8 encoding).
PRECISIONS = {"float": "float", "int8": "int8", "fp16": "fp16", "W8A8": "w8a8", "W8A16": "w8a16"}

# profile -> which published rows calibrate it: (device, runtime, threads or None for any)
PUBLISHED = {
    "pixel-3-cpu": ("Pixel 3", "TFLite CPU", "4"),
    "android-midrange-cpu": ("Pixel 2", "TFLite CPU", "1 (large core)"),
    "pixel-6-cpu": ("Pixel 6", "TFLite CPU", None),
    "iphone-15-pro-ane": ("iPhone 15 Pro", "Core ML", None),
}
# Rows of another device that stand in for one the profile's device was never published with,
# and why that is fair: (device, model, precision) -> reason.
STAND_INS = {
    "iphone-15-pro-ane": {("iPhone 14 Pro", "MobileNetV3-Small 1.0", "fp16"):
                          "iPhone 14 Pro row: the A16 and A17 Pro Neural Engines run fp16 within 10% of each "
                          "other on the three models published for both"},
}
COLUMNS = ("model", "precision", "input_px", "threads", "latency_ms", "source",
           "macs", "depthwise_macs", "params", "activations", "layers", "device", "runtime", "stand_in")

_features_cache: dict = {}


def features(arch: str, size: int):
    if (arch, size) not in _features_cache:
        torch.manual_seed(0)
        if arch in WIDTHS:
            from timm.models import efficientnet

            generator, width = WIDTHS[arch]
            model = getattr(efficientnet, generator)(arch, channel_multiplier=width)
        else:
            model = timm.create_model(arch)
        _features_cache[arch, size] = cost_features(model, size)
    return _features_cache[arch, size]


def write(profile: str, rows: list[dict]) -> Path:
    path = SHIPPED_DIR / f"{profile}.references.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def published_rows(published: Path, device: str, runtime: str, threads: str | None,
                   stand_ins: dict | None = None) -> list[dict]:
    rows, source = [], None
    stand_ins = stand_ins or {}
    with open(published, newline="") as f:
        for r in csv.DictReader(f):
            # The CSV says "same" for the source of the row above it, whichever device that was.
            source = source if r["source"].startswith("same") and source else r["source"]
            stand_in = stand_ins.get((r["device"], r["model"], r["precision"]))
            if r["runtime"] != runtime or (threads and r["threads"] != threads):
                continue
            if r["device"] != device and stand_in is None:
                continue
            arch, size = TIMM_NAMES[r["model"]], int(r["input_px"])
            rows.append({"model": arch, "precision": PRECISIONS[r["precision"]], "input_px": size,
                         "threads": r["threads"], "latency_ms": float(r["latency_ms"]),
                         "source": f"{r['device']} {r['runtime']}: {source}",
                         "device": r["device"], "runtime": r["runtime"], "stand_in": stand_in or "",
                         **features(arch, size).to_dict()})
            rows[-1].pop("image_size")
    return rows


def report(profile_name: str) -> None:
    """One table row per precision: how it is estimated, its leave-one-out errors, its quality."""
    for row in estimate.error_table(load_profile(profile_name)):
        print(f"| {profile_name} | {row['precision']} | {row['rows']} | {row['model']} | "
              + " | ".join("-" if row[k] is None else f"{row[k]:.0f}"
                           for k in ("loo_median_pct", "loo_mean_pct", "loo_worst_pct"))
              + f" | {'order of magnitude' if row['order_of_magnitude'] else 'gates'} |")


def across_sources(profile_name: str) -> None:
    """Data a fit was not chosen on: per precision, the model fitted on the rows of the table's
    largest source alone (6 rows or more), and its error on every other source's rows (another
    paper, another model family)."""
    references = estimate.load_references(load_profile(profile_name).references_path())
    for precision in sorted({r.precision for r in references}):
        rows = [r for r in references if r.precision == precision]
        sources = {}
        for r in rows:
            sources.setdefault(r.source.split(" (")[0], []).append(r)
        largest = max(sources, key=lambda k: len(sources[k]))
        if len(sources) < 2 or len(sources[largest]) < 6:
            continue
        model = estimate.fit(sources[largest], precision)
        for r in (r for k, group in sources.items() if k != largest for r in group):
            predicted = model.predict(r.features)
            print(f"| {profile_name} | {precision} | {len(sources[largest])} rows of {largest.split(': ')[-1]} | "
                  f"{r.model} {r.features.image_size} px ({r.source.split(': ')[-1]}) | {r.latency_ms:g} | "
                  f"{predicted:.3g} | {(predicted - r.latency_ms) / r.latency_ms * 100:+.0f} |")


def other_setups(profile_name: str, published: Path) -> None:
    """The profile's device measured in another setup (another runtime or thread count): its
    rows stay out of the table, and the table's fit says how far apart the setups are."""
    device, runtime, threads = PUBLISHED[profile_name]
    profile = load_profile(profile_name)
    source = None
    with open(published, newline="") as f:
        for r in csv.DictReader(f):
            source = source if r["source"].startswith("same") and source else r["source"]
            if r["device"] != device or (r["runtime"] == runtime and (not threads or r["threads"] == threads)):
                continue
            arch, size = TIMM_NAMES[r["model"]], int(r["input_px"])
            try:
                predicted = estimate.calibrate(profile, PRECISIONS[r["precision"]]).predict(features(arch, size))
            except RunnerFailed:
                continue
            print(f"| {profile_name} | {r['runtime']} | {arch} {r['precision']} {size} px | {r['latency_ms']} | "
                  f"{predicted:.3g} | {float(r['latency_ms']) / predicted:.1f}x | {source} |")


def monotonic(profile_name: str) -> None:
    """The bounds' assumption tested on each table's own rows: among the pairs of rows of one
    precision where one does at least as much of every counted cost, how many have it faster."""
    references = estimate.load_references(load_profile(profile_name).references_path())
    for precision in sorted({r.precision for r in references}):
        pairs, against = estimate.monotonic(references, precision)
        worst = max(against, key=lambda p: p[1].latency_ms / p[0].latency_ms, default=None)
        print(f"| {profile_name} | {precision} | {pairs} | {len(against)} | " + (
            "-" if worst is None else f"{worst[0].model} {worst[0].features.image_size} px {worst[0].latency_ms:g} ms "
            f"against {worst[1].model} {worst[1].features.image_size} px {worst[1].latency_ms:g} ms") + " |")


def _table(title: str, columns: tuple[str, ...], rows_of, profiles) -> None:
    """A markdown table: its title, header, and `rows_of(profile)` printing each profile's rows."""
    print(f"\n{title}\n" if title else "")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for profile in profiles:
        rows_of(profile)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--published", type=Path, nargs="?", const=Path(__file__).with_name("published_latencies.csv"),
                        help="the CSV of published latencies, each row with its source (default: "
                             "benchmarks/published_latencies.csv)")
    args = parser.parse_args()
    if args.published:
        for profile, selector in PUBLISHED.items():
            rows = published_rows(args.published, *selector, STAND_INS.get(profile))
            print(f"wrote {write(profile, rows)}")
    published = args.published or Path(__file__).with_name("published_latencies.csv")
    every = (*PUBLISHED, "x86-server-avx2")
    _table("", ("profile", "precision", "rows", "model", "LOO median %", "LOO mean %", "LOO worst %", "estimate"),
           report, every)
    _table("Fitted on one source's rows, predicting another's:",
           ("profile", "precision", "fitted on", "row", "measured ms", "predicted ms", "error %"), across_sources,
           PUBLISHED)
    _table("Does latency rise with every counted cost? (a table that says no bounds nothing)",
           ("profile", "precision", "row pairs, one doing at least as much of every cost", "of them, that one faster",
            "the worst"), monotonic, every)
    _table("The same device in another setup, against the profile's fit:",
           ("profile", "setup", "row", "measured ms", "the profile's estimate", "measured / estimate", "source"),
           lambda profile: other_setups(profile, published), PUBLISHED)
    return 0


if __name__ == "__main__":
    sys.exit(main())
