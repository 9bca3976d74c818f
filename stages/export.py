"""Stage `export`: one INT8 artifact per target, validated in its own runtime and measured
on its target's latency profile (host, device or estimate)."""

from __future__ import annotations

import contextlib
import json
import re
import time
from importlib.metadata import version
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from edgekiln.stages import training
from edgekiln.stages.data import Dataset, to_input
from edgekiln.stages.errors import InputError
from edgekiln.stages.progress import console
from edgekiln.stages.quantize import calibration_images
from edgekiln.stages.result import StageResult
from edgekiln.targets import get_format, runners
from edgekiln.targets.cost import cost_features
from edgekiln.targets.files import size_bytes
from edgekiln.targets.errors import DeviceUnreachable, RunnerFailed, RuntimeUnavailable
from edgekiln.targets.profiles import SHIPPED_DIR, Budgets, Profile, ProfileError, host_profile, load_profile
from edgekiln.targets.runners import ssh as ssh_runner


class TargetConfig(BaseModel):
    """One `[[targets]]` entry: an artifact, and the latency profile it is checked against."""

    model_config = ConfigDict(extra="forbid")

    name: str
    format: Literal["onnx", "tflite", "coreml"] | None = None  # default: the profile's
    profile: str | None = None  # shipped profile name or path of a profile .toml
    budget: Budgets = Budgets()  # overrides of the profile's budgets
    runner: Literal["host", "adb", "ssh", "estimate"] | None = None  # override of the profile's runner
    allow_estimate: bool = False  # estimate instead of failing when the device cannot be reached
    threads: int | None = Field(None, ge=1, le=256)  # override of the profile's threads
    artifact: str | None = None  # file name in the output directory; default model.<format suffix>
    latency_runs: int | None = Field(None, ge=10, le=100_000)
    warmup_runs: int | None = Field(None, ge=1, le=10_000)
    _profile: Profile | None = PrivateAttr(None)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v):
            raise ValueError("use letters, digits, '.', '_' and '-' only")
        return v

    @model_validator(mode="after")
    def _format_given(self) -> "TargetConfig":
        if self.format is None and self.profile is None:
            raise ValueError("give a format (onnx, tflite, coreml) or a profile")
        return self

    def resolve(self, base: Path | None = None) -> Profile:
        """Load the profile (relative paths against `base`), check it fits `format`, fill in
        `format`, and apply this entry's overrides. ProfileError names what is wrong."""
        if self.profile is None:
            profile = host_profile(self.format, self.threads or 1)
        else:
            profile = load_profile(self.profile, base)
            if self.format is not None and self.format != profile.format:
                raise ProfileError(f"profile {profile.name!r} is for {profile.format} artifacts, "
                                   f"not format {self.format!r}")
        self.format = profile.format
        runner = profile.runner.model_copy(update={k: v for k, v in {
            "kind": self.runner, "runs": self.latency_runs, "warmup_runs": self.warmup_runs}.items() if v is not None})
        runtime = profile.runtime.model_copy(update={"threads": self.threads} if self.threads else {})
        self._profile = profile.model_copy(update={"runner": runner, "runtime": runtime,
                                                   "budget": profile.budget.merged(self.budget)})
        return self._profile

    @property
    def effective_profile(self) -> Profile:
        return self._profile if self._profile is not None else self.resolve()

    @property
    def artifact_name(self) -> str:
        return self.artifact or f"model{get_format(self.format).SUFFIX}"


def preprocessing(bundle) -> dict:
    """What an app must do to an image before feeding any artifact."""
    return {"image_size": bundle.input_size, "layout": "NCHW", "color": "RGB",
            "scale": "pixel / 255", "mean": list(bundle.mean), "std": list(bundle.std)}


def budget_keys(target: TargetConfig | None, profile: Profile) -> dict[str, str]:
    """Where each budget was set, for gate messages: the target's override or the profile."""
    overridden = set() if target is None else set(target.budget.model_dump(exclude_none=True))
    return {field: f"targets.{target.name}.budget.{field}" if field in overridden
            else f"budget.{field} of profile {profile.name}" for field in Budgets.model_fields}


@contextlib.contextmanager
def device_errors(subject: str, profile: Profile, estimate_hint: str = "set allow_estimate = true on the target"):
    """A device that cannot be reached, or a runner that fails on it, is bad input naming
    `subject` (the target) and the profile (exit 2), never an internal error."""
    try:
        yield
    except DeviceUnreachable as e:
        hint = "" if profile.estimate is None else f"; {estimate_hint} to estimate instead"
        raise InputError(f"{subject}: profile {profile.name!r} device cannot be reached: {e}{hint}") from e
    except RunnerFailed as e:
        raise InputError(f"{subject}: profile {profile.name!r} runner {profile.runner.kind}: {e}") from e


def _runtime_accuracy(fmt, target, profile, path, val_x, val_y, float_top1, bundle) -> dict:
    """Accuracy and top-1 agreement with the torch model, in the artifact's own runtime where
    one can run it (here, or a Mac over ssh for Core ML), else on the format's torch proxy."""
    record = {"accuracy_source": "runtime"}
    try:
        if target.format == "coreml" and profile.runner.kind == "ssh":
            with console.status(f"  {target.name}: {len(val_y)} val images in Core ML over ssh"), \
                    device_errors(f"target {target.name}", profile):
                predicted = ssh_runner.run_remote(path, profile, val_x)[1]
        else:
            with console.status(f"  {target.name}: {len(val_y)} val images in {fmt.RUNTIME}"):
                predicted = fmt.predict(path, val_x, threads=profile.runtime.threads)
    except RuntimeUnavailable as e:
        proxy = fmt.proxy_model(bundle.model)
        with torch.no_grad():
            predicted = proxy(torch.from_numpy(val_x)).numpy()
        record = {"accuracy_source": "proxy", "accuracy_not_measured": str(e)}
    record.update(accuracy=training.accuracy(predicted, val_y),
                  agreement=float((predicted.argmax(1) == float_top1).mean() * 100))
    return record


def _latency(target, profile, path, features, precision) -> dict:
    """The profile's runner on the artifact; the record says where every figure comes from."""
    try:
        with console.status(f"  {target.name}: latency on {profile.device} ({profile.runner.kind})"), \
                device_errors(f"target {target.name}", profile):
            m = runners.measure(path, profile, features, precision, allow_estimate=target.allow_estimate)
    except RuntimeUnavailable as e:
        return {"latency_ms": None, "latency_source": None, "peak_memory_mb": None,
                "latency_notes": [f"latency not measured: {e}"]}
    return {"latency_ms": m.latency_ms, "latency_source": m.source, "latency_runner": m.runner,
            "device": m.device, "latency_tool": m.tool, "peak_memory_mb": m.peak_memory_mb,
            "latency_notes": m.notes, "latency_detail": m.extra}


def _export_one(target: TargetConfig, bundle, calibration, val_x, val_y, float_top1, workdir, metadata):
    fmt = get_format(target.format)
    profile = target.effective_profile
    path = workdir / target.artifact_name
    features = cost_features(bundle.model, bundle.input_size)
    metadata = {**metadata, "edgekiln_cost": json.dumps(features.to_dict()), "edgekiln_precision": fmt.PRECISION}
    started = time.perf_counter()
    with console.status(f"  {target.name}: converting to {target.format}"):
        fmt.export_int8(bundle.model, bundle.example_input(), calibration, path, metadata)
    convert_seconds = time.perf_counter() - started
    console.print(f"  {target.name}: {target.format} artifact written ({convert_seconds:.0f} s)")
    record = {"target": target.name, "format": target.format, "file": target.artifact_name,
              "runtime": fmt.RUNTIME, "precision": fmt.PRECISION, "threads": profile.runtime.threads,
              "profile": profile.name, "budget": profile.budget.model_dump(),
              "budget_keys": budget_keys(target, profile),
              "profile_file": None if profile.path is None or profile.path.parent == SHIPPED_DIR else str(profile.path),
              "convert_seconds": round(convert_seconds, 1), "cost_features": features.to_dict()}
    record["size_bytes"] = size_bytes(path)
    record.update(_runtime_accuracy(fmt, target, profile, path, val_x, val_y, float_top1, bundle))
    record.update(_latency(target, profile, path, features, fmt.PRECISION))
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
