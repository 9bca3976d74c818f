"""Accuracy and host latency of the demo's pruned student as INT8 ONNX with each
onnxruntime weight/activation type pairing, beside the fp32 export, in one run.

    make demo   # fills .edgekiln-cache, so the pipeline below is all cache hits
    .venv/bin/python benchmarks/onnx_int8_weight_types.py [examples/digits.toml]

Why: edgekiln exports ONNX INT8 as U8U8 (uint8 weights) because U8S8 (int8 weights,
onnxruntime's usual default) saturates in x86 kernels without VNNI.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
os.environ.setdefault("TQDM_DISABLE", "1")

from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static  # noqa: E402
from onnxruntime.quantization.shape_inference import quant_pre_process  # noqa: E402

from edgekiln.data.dataset import load_dataset, to_input  # noqa: E402
from edgekiln.engine.config import load_config  # noqa: E402
from edgekiln.engine.runner import run_pipeline  # noqa: E402
from edgekiln.targets import get_format  # noqa: E402
from edgekiln.targets.formats import onnx as onnx_format  # noqa: E402
from edgekiln.targets.profiles import RunnerSpec, host_profile  # noqa: E402
from edgekiln.targets.runners import host  # noqa: E402
from edgekiln.training.int8_recipe import calibration_images  # noqa: E402

VARIANTS = {
    "U8S8 (int8 weights)": dict(activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8),
    "U8S8 + reduce_range": dict(activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=True),
    "S8S8": dict(activation_type=QuantType.QInt8, weight_type=QuantType.QInt8),
    "U8U8 (edgekiln)": dict(activation_type=QuantType.QUInt8, weight_type=QuantType.QUInt8),
}


def main() -> None:
    config_path = Path(sys.argv[1] if len(sys.argv) > 1 else "examples/digits.toml")
    cfg = load_config(config_path)
    with tempfile.TemporaryDirectory() as tmp:
        outcome = run_pipeline(cfg, Path(tmp) / "out", Path(".edgekiln-cache"), config_path.read_text())
        quantized = outcome.results["quantize"]
        bundle = quantized.bundle
        data = load_dataset(cfg.data)
        calibration = calibration_images(data, bundle, quantized.metrics["calibration_indices"])
        val_x = to_input(data.val_x, bundle.mean, bundle.std).numpy()
        val_y = data.val_y.numpy()
        fp32, pre = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx"
        onnx_format.export_float(bundle.model, bundle.example_input(), fp32)
        quant_pre_process(str(fp32), str(pre))
        models = {"fp32": fp32}
        for name, kwargs in VARIANTS.items():
            models[name] = Path(tmp) / f"{len(models)}.onnx"
            quantize_static(str(pre), str(models[name]), onnx_format._Reader(calibration),
                            quant_format=QuantFormat.QDQ, per_channel=True,
                            calibrate_method=CalibrationMethod.MinMax, **kwargs)
        print(f"student {bundle.arch} (pruned), {len(val_y)} val images, onnxruntime, 2 threads, batch 1\n")
        print("| encoding | val accuracy % | host p50 ms | p50 / fp32 |\n|---|---|---|---|")
        base = None
        for name, path in models.items():
            accuracy = (get_format("onnx").predict(path, val_x).argmax(1) == val_y).mean() * 100
            p50 = host.measure(path, HOST_2_THREADS).latency_ms["p50"]
            base = base or p50
            print(f"| {name} | {accuracy:.2f} | {p50:.3f} | {p50 / base:.2f} |")


HOST_2_THREADS = host_profile("onnx", 2).model_copy(
    update={"runner": RunnerSpec(kind="host", warmup_runs=20, runs=300)})


if __name__ == "__main__":
    main()
