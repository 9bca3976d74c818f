"""What the format interface costs and buys, measured on this host in one run.

    .venv/bin/python benchmarks/formats.py [--arch mobilenetv3_small_050] [--size 32] [--io-size 224] [--runs 300]

1. `edgekiln validate CONFIG` (schema only, no torch) against what validating a config
   cost before the config schema was torch-free: importing the stages, then loading it.
2. ExecuTorch at `--size` px (the demo's): the time to lower the model to a .pte (fp32,
   INT8) and its host p50 in ExecuTorch's runtime, beside the INT8 TFLite and ONNX artifacts.
3. The app-facing interface (`io`) at `--io-size` px: host p50 of one INT8 TFLite body fed
   float pixels, uint8 pixels, or its own INT8 NCHW tensor (no adapter: the app normalizes
   and quantizes), and of ONNX fed normalized floats or uint8 pixels; three interleaved
   rounds, the median of each.

Untrained weights: latency and conversion time do not depend on them. Timing is the host
runner's (a child process in the artifact's runtime, 1 thread, batch 1). Writes
benchmarks/formats.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def seconds(command: list[str], repeats: int = 3) -> float:
    """Median wall time of `command` over `repeats` runs."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def validate_times(config: Path) -> dict:
    cli = [str(Path(sys.executable).parent / "edgekiln"), "validate", str(config)]
    before = [sys.executable, "-c", "import edgekiln.engine.runner; from edgekiln.engine.config import load_config; "
              f"load_config({str(config)!r})"]
    new, old = seconds(cli), seconds(before)
    return {"validate_s": round(new, 2), "import_stages_and_load_s": round(old, 2), "ratio": round(old / new, 1)}


def host_p50(path: Path, fmt: str, runs: int) -> float:
    from edgekiln.targets import runners
    from edgekiln.targets.profiles import host_profile

    profile = host_profile(fmt, 1)
    profile.runner.runs, profile.runner.warmup_runs = runs, 20
    return runners.measure(path, profile, None, "int8").latency_ms["p50"]


def build(fmt_name: str, model, size: int, encoding: str, io: str, directory: Path) -> tuple[Path, float]:
    """The artifact, and its conversion time in seconds."""
    import numpy as np
    import torch

    from edgekiln.targets import get_format

    images = np.random.default_rng(0).standard_normal((64, 3, size, size)).astype(np.float32)
    metadata = {"labels": json.dumps([str(i) for i in range(10)]), "edgekiln_io": io,
                "preprocessing": json.dumps({"image_size": size, "mean": MEAN, "std": STD})}
    fmt = get_format(fmt_name)
    path = directory / f"m.{size}.{encoding}.{io}{fmt.SUFFIX}"
    started = time.perf_counter()
    fmt.export(model, torch.from_numpy(images[:1]), images, path, metadata, encoding)
    return path, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="mobilenetv3_small_050")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--io-size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()

    import timm
    import torch

    results: dict = {"arch": args.arch, "validate": validate_times(ROOT / "examples" / "digits.toml")}
    print(json.dumps(results["validate"]))
    torch.manual_seed(0)
    model = timm.create_model(args.arch, num_classes=10).eval()
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for fmt_name, encoding, io in (("executorch", "fp32", "float"), ("executorch", "int8", "float"),
                                       ("tflite", "int8", "float"), ("onnx", "int8", "float")):
            path, convert = build(fmt_name, model, args.size, encoding, io, Path(tmp))
            rows.append({"format": fmt_name, "encoding": encoding, "size_px": args.size, "convert_s": round(convert, 1),
                         "size_kb": round(path.stat().st_size / 1e3),
                         "host_p50_ms": round(host_p50(path, fmt_name, args.runs), 4)})
            print(json.dumps(rows[-1]))
        results["conversion"] = rows
        variants = [("tflite", "int8"), ("tflite", "float"), ("tflite", "uint8"), ("onnx", "float"), ("onnx", "uint8")]
        paths = {v: build(v[0], model, args.io_size, "int8", v[1], Path(tmp))[0] for v in variants}
        timings: dict = {v: [] for v in variants}
        for _ in range(3):
            for v in variants:
                timings[v].append(host_p50(paths[v], v[0], args.runs))
        io_rows = [{"format": f, "io": io, "size_px": args.io_size, "p50_ms": [round(t, 3) for t in timings[(f, io)]],
                    "median_ms": round(statistics.median(timings[(f, io)]), 3)} for f, io in variants]
        for row in io_rows:
            base = next(r for r in io_rows if r["format"] == row["format"] and r["io"] in ("int8", "float"))
            row["ratio"] = round(row["median_ms"] / base["median_ms"], 2)
            print(json.dumps(row))
        results["io"] = io_rows
    out = ROOT / "benchmarks" / "formats.json"
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
