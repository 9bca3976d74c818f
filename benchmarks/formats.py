"""What the format interface costs and buys, measured on this host in one run.

    .venv/bin/python benchmarks/formats.py [--arch mobilenetv3_small_050] [--size 32] [--runs 300]

1. `edgekiln validate CONFIG` (schema only, no torch) against what validating a config
   cost before the config schema was torch-free: importing the stages, then loading it.
2. ExecuTorch: the time to lower the model to a .pte (fp32, INT8) and its host p50 in
   ExecuTorch's runtime, beside the same model's INT8 TFLite and ONNX artifacts.
3. The app-facing TFLite interface (`io`): host p50 of one INT8 body with float pixels in,
   uint8 pixels in, or its own INT8 NCHW tensors (no adapter), as a ratio to the last.

Untrained weights: latency and conversion time do not depend on them. Timing is the host
runner's (a child process in the artifact's runtime, 1 thread, batch 1).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def seconds(command: list[str], repeats: int = 3) -> float:
    """Median wall time of `command` over `repeats` runs."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def validate_times(config: Path) -> dict:
    cli = [str(Path(sys.executable).parent / "edgekiln"), "validate", str(config)]
    before = [sys.executable, "-c", "import edgekiln.runner, sys; from edgekiln.config import load_config; "
              f"load_config({str(config)!r})"]
    new, old = seconds(cli), seconds(before)
    return {"validate_s": round(new, 2), "import_stages_and_load_s": round(old, 2), "ratio": round(old / new, 1)}


def host_p50(path: Path, fmt: str, runs: int) -> float:
    from edgekiln.targets import runners
    from edgekiln.targets.profiles import host_profile

    profile = host_profile(fmt, 1)
    profile.runner.runs, profile.runner.warmup_runs = runs, 20
    return runners.measure(path, profile, None, "int8").latency_ms["p50"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="mobilenetv3_small_050")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()

    import numpy as np
    import timm
    import torch

    from edgekiln.targets import get_format

    results: dict = {"validate": validate_times(ROOT / "examples" / "digits.toml")}
    print(json.dumps(results["validate"]))
    torch.manual_seed(0)
    model = timm.create_model(args.arch, num_classes=10).eval()
    images = np.random.default_rng(0).standard_normal((64, 3, args.size, args.size)).astype(np.float32)
    example = torch.from_numpy(images[:1])
    preprocessing = {"image_size": args.size, "layout": "NCHW", "color": "RGB", "scale": "pixel / 255",
                     "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    metadata = {"labels": json.dumps([str(i) for i in range(10)]), "preprocessing": json.dumps(preprocessing)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for fmt_name, encoding, io in (("executorch", "fp32", "float"), ("executorch", "int8", "float"),
                                       ("tflite", "int8", "int8"), ("tflite", "int8", "float"),
                                       ("tflite", "int8", "uint8"), ("onnx", "int8", "float"),
                                       ("onnx", "int8", "uint8")):
            fmt = get_format(fmt_name)
            path = Path(tmp) / f"m.{encoding}.{io}{fmt.SUFFIX}"
            started = time.perf_counter()
            fmt.export(model, example, images, path, {**metadata, "edgekiln_io": io}, encoding)
            convert = time.perf_counter() - started
            rows.append({"format": fmt_name, "encoding": encoding, "io": io, "convert_s": round(convert, 1),
                         "size_kb": round(path.stat().st_size / 1e3), "host_p50_ms": round(host_p50(path, fmt_name, args.runs), 4)})
            print(json.dumps(rows[-1]))
    body = {r["format"]: r["host_p50_ms"] for r in rows if r["io"] in ("int8", "float") and r["encoding"] == "int8"}
    for r in rows:
        if r["format"] == "tflite":
            r["ratio_to_int8_io"] = round(r["host_p50_ms"] / next(x["host_p50_ms"] for x in rows
                                                                   if x["format"] == "tflite" and x["io"] == "int8"), 2)
    results.update(arch=args.arch, size=args.size, artifacts=rows, int8_p50_by_format=body)
    out = ROOT / "benchmarks" / "formats.json"
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
