"""Stage `export`: one INT8 artifact per target, validated in its own runtime and timed."""

from __future__ import annotations

import json
import re
import time
from importlib.metadata import version
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from edgekiln.stages import training
from edgekiln.stages.data import Dataset, to_input
from edgekiln.stages.progress import console
from edgekiln.stages.quantize import calibration_images
from edgekiln.stages.result import StageResult
from edgekiln.targets import get_format
from edgekiln.targets.errors import RuntimeUnavailable


class TargetConfig(BaseModel):
    """One `[[targets]]` entry: an artifact format and how to run it."""

    model_config = ConfigDict(extra="forbid")

    name: str
    format: Literal["onnx", "tflite", "coreml"]
    threads: int = Field(1, ge=1, le=256)
    artifact: str | None = None  # file name in the output directory; default model.<format suffix>
    latency_runs: int = Field(100, ge=50, le=100_000)
    warmup_runs: int = Field(10, ge=1, le=10_000)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v):
            raise ValueError("use letters, digits, '.', '_' and '-' only")
        return v

    @property
    def artifact_name(self) -> str:
        return self.artifact or f"model{get_format(self.format).SUFFIX}"


def preprocessing(bundle) -> dict:
    """What an app must do to an image before feeding any artifact."""
    return {"image_size": bundle.input_size, "layout": "NCHW", "color": "RGB",
            "scale": "pixel / 255", "mean": list(bundle.mean), "std": list(bundle.std)}


def _export_one(target: TargetConfig, bundle, calibration, val_x, val_y, float_top1, workdir, metadata):
    fmt = get_format(target.format)
    path = workdir / target.artifact_name
    started = time.perf_counter()
    with console.status(f"  {target.name}: converting to {target.format}"):
        fmt.export_int8(bundle.model, bundle.example_input(), calibration, path, metadata)
    convert_seconds = time.perf_counter() - started
    console.print(f"  {target.name}: {target.format} artifact written ({convert_seconds:.0f} s)")
    record = {"target": target.name, "format": target.format, "file": target.artifact_name,
              "runtime": fmt.RUNTIME, "threads": target.threads, "convert_seconds": round(convert_seconds, 1)}
    try:
        with console.status(f"  {target.name}: {len(val_y)} val images in {fmt.RUNTIME}"):
            predicted = fmt.predict(path, val_x, threads=target.threads)
        record.update(accuracy_source="runtime", accuracy=training.accuracy(predicted, val_y),
                      agreement=float((predicted.argmax(1) == float_top1).mean() * 100))
        with console.status(f"  {target.name}: timing {target.latency_runs} runs"):
            latency = fmt.benchmark(path, val_x[0], target.threads, target.warmup_runs, target.latency_runs)
        record.update(latency_ms=latency.to_dict(), latency_source="host")
    except RuntimeUnavailable as e:
        proxy = fmt.proxy_model(bundle.model)
        with torch.no_grad():
            predicted = proxy(torch.from_numpy(val_x)).numpy()
        record.update(accuracy_source="proxy", accuracy=training.accuracy(predicted, val_y),
                      agreement=float((predicted.argmax(1) == float_top1).mean() * 100),
                      latency_ms=None, latency_source=None, not_measured=str(e))
    if target.format == "coreml":
        record["structure"] = fmt.check(path, tuple(bundle.example_input().shape))
    return record


def run(data: Dataset, config: dict, inputs: dict[str, StageResult], workdir: Path) -> StageResult:
    targets: list[TargetConfig] = config["targets"]
    quantized = inputs["quantize"]
    bundle = quantized.bundle
    calibration = calibration_images(data, bundle, quantized.metrics["calibration_indices"])
    val_x = to_input(data.val_x, bundle.mean, bundle.std).numpy()
    float_top1 = training.logits(bundle, data.val_x).argmax(1).numpy()
    metadata = {
        "edgekiln_version": version("edgekiln"),
        "labels": json.dumps(data.classes),
        "preprocessing": json.dumps(preprocessing(bundle)),
        "description": f"{bundle.arch} ({bundle.source}), INT8, {data.num_classes} classes",
    }
    artifacts = [_export_one(t, bundle, calibration, val_x, data.val_y.numpy(), float_top1, workdir, metadata)
                 for t in targets]
    worst = min(a["accuracy"] for a in artifacts)
    return StageResult(accuracy=worst, files=[a["file"] for a in artifacts], metrics={
        "artifacts": artifacts, "preprocessing": preprocessing(bundle), "labels": data.classes,
        "params": quantized.metrics["params"], "macs": quantized.metrics["macs"]})
