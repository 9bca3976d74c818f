"""Core ML artifacts: mlprogram with INT8 (linear symmetric, per-channel) weights, or all
float16, or all float32.

Core ML predictions run only on macOS. Elsewhere the package is still built and
checked structurally, and its accuracy is measured on a torch-side proxy: the
model with its weights quantized by coremltools' own torch-side quantizer.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import torch

from edgekiln.targets.errors import ConversionError, RuntimeUnavailable
from edgekiln.targets.int8 import Int8Options

NAME = "coreml"
SUFFIX = ".mlpackage"
RUNTIME = "coremltools"
PRECISION = "w8a16"  # INT8 weights, float16 activations
MIXED_PRECISION = False  # weight-only INT8 everywhere; edgekiln keeps no layer float here
# encoding -> precision, as the cost model and the latency references name it. No dynamic-range
# INT8: Core ML has none.
ENCODINGS = {"fp32": "float", "fp16": "fp16", "int8": PRECISION}
NOT_CALIBRATED = ("float16 (W8A16): calibrating INT8 activations needs Core ML predictions, "
                  "which run only on macOS")
INPUT, OUTPUT = "input", "logits"
RUNTIME_AVAILABLE = sys.platform == "darwin"


def export(model: torch.nn.Module, example: torch.Tensor, calibration: np.ndarray, path: Path,
           metadata: dict[str, str], encoding: str = "int8", options: Int8Options = Int8Options()) -> dict:
    """Write an .mlpackage in `encoding` (see ENCODINGS); returns what was applied.
    int8: INT8 weights (W8; activations stay float16, as activation calibration needs Core ML
    predictions, i.e. macOS). `calibration` is unused here, and so is `options.calibrator`."""
    if encoding not in ENCODINGS:
        raise ValueError(f"Core ML has no {encoding!r} encoding; known: {', '.join(ENCODINGS)}")
    if encoding == "int8" and options.float_layers:
        raise ValueError("Core ML artifacts do not keep layers in float (no mixed precision)")
    import coremltools as ct
    import coremltools.optimize as cto

    model, example = model.cpu().eval(), example.cpu()
    try:
        # torch.export, not jit.trace: traced shape arithmetic (MobileViT's unfold) becomes
        # `int` ops that coremltools 9.0 cannot convert under numpy >= 2.4
        # (apple/coremltools#2633, #2755); export specialises the shapes instead.
        exported = torch.export.export(model, (example,)).run_decompositions({})
        mlmodel = ct.convert(
            exported, inputs=[ct.TensorType(name=INPUT, shape=tuple(example.shape))],
            outputs=[ct.TensorType(name=OUTPUT)], convert_to="mlprogram",
            minimum_deployment_target=ct.target.iOS16,
            compute_precision=ct.precision.FLOAT32 if encoding == "fp32" else ct.precision.FLOAT16,
        )
        if encoding == "int8":
            config = cto.coreml.OptimizationConfig(
                global_config=cto.coreml.OpLinearQuantizerConfig(
                mode="linear_symmetric", dtype="int8", granularity=_granularity(options)))
            mlmodel = cto.coreml.linear_quantize_weights(mlmodel, config)
    except Exception as e:
        raise ConversionError(NAME, str(e).splitlines()[0] if str(e) else type(e).__name__) from e
    mlmodel.short_description = metadata.get("description", "")
    for key, value in metadata.items():
        mlmodel.user_defined_metadata[key] = value
    mlmodel.save(str(path))
    check(path, tuple(example.shape), int8_weights=encoding == "int8")
    if encoding != "int8":
        return {}
    return {"calibrator": None, "per_channel": options.per_channel, "float_layers": [],
            "activations": NOT_CALIBRATED}


def export_int8(model: torch.nn.Module, example: torch.Tensor, calibration: np.ndarray,
                path: Path, metadata: dict[str, str], options: Int8Options = Int8Options()) -> dict:
    """Write an .mlpackage with INT8 weights (W8A16); see `export`."""
    return export(model, example, calibration, path, metadata, "int8", options)


def _granularity(options: Int8Options) -> str:
    return "per_channel" if options.per_channel else "per_tensor"


def check(path: Path, input_shape: tuple[int, ...], int8_weights: bool | None = None) -> dict:
    """Structural check that runs on any OS: the package loads, input/output names and the
    input shape are as exported, and the weights are stored as INT8 when they should be
    (`int8_weights`; by default, when the package's edgekiln_precision metadata says so, or it
    has none). Returns what it found."""
    import coremltools as ct

    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    inputs = {i.name: tuple(i.type.multiArrayType.shape) for i in spec.description.input}
    outputs = [o.name for o in spec.description.output]
    if inputs != {INPUT: input_shape} or outputs != [OUTPUT]:
        raise ConversionError(NAME, f"package has inputs {inputs} and outputs {outputs}, "
                                    f"expected {{'{INPUT}': {input_shape}}} and ['{OUTPUT}']")
    if int8_weights is None:
        int8_weights = spec.description.metadata.userDefined.get("edgekiln_precision", PRECISION) == PRECISION
    program = str(spec.mlProgram)
    int8_ops = program.count("constexpr_affine_dequantize") + program.count("constexpr_blockwise_shift_scale")
    if int8_weights and int8_ops == 0:
        raise ConversionError(NAME, "no INT8 weight ops in the saved package")
    return {"inputs": {k: list(v) for k, v in inputs.items()}, "outputs": outputs, "int8_weight_ops": int8_ops}


def read_metadata(path: Path) -> dict[str, str]:
    import coremltools as ct

    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    return dict(spec.description.metadata.userDefined)


class _Float16(torch.nn.Module):
    """A model computing in float16 with float32 inputs and outputs, as an fp16 mlprogram does."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model.half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.half()).float()


def proxy_model(model: torch.nn.Module, options: Int8Options = Int8Options(), encoding: str = "int8") -> torch.nn.Module:
    """Torch-side stand-in for the artifact. int8: weights quantized INT8 (per channel unless
    options say per tensor), symmetric, by coremltools.optimize.torch (what
    linear_quantize_weights does to the mlprogram); fp16: the model computing in float16."""
    model = copy.deepcopy(model).cpu().eval()
    if encoding == "fp32":
        return model
    if encoding == "fp16":
        return _Float16(model)
    from coremltools.optimize.torch.quantization import PostTrainingQuantizer, PostTrainingQuantizerConfig

    config = PostTrainingQuantizerConfig.from_dict({"global_config": {
        "weight_dtype": "int8", "granularity": _granularity(options), "quantization_scheme": "symmetric"}})
    return PostTrainingQuantizer(model, config).compress()


def load(path: Path) -> None:
    """Structural load (any OS): predictions need macOS, see `predict`."""
    import coremltools as ct

    ct.models.MLModel(str(path), skip_model_load=True)


def predict(path: Path, images: np.ndarray, threads: int = 1) -> np.ndarray:
    """Logits computed by Core ML (macOS only), one image at a time."""
    if not RUNTIME_AVAILABLE:
        raise RuntimeUnavailable("Core ML predictions need macOS; coremltools cannot run them on "
                                 f"{sys.platform}")
    from edgekiln.targets.runtime_bench import CoremlSession, predict as run_each

    return run_each(CoremlSession(str(path)), images)
