"""TFLite (LiteRT) artifacts, run in ai-edge-litert: INT8 through litert-torch's PT2E quantizer
(see pt2e.py; layers can be kept in float: mixed precision), or fp32 from litert-torch, with
fp16 weights or dynamic-range INT8 applied to it by ai-edge-quantizer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgekiln.targets import pt2e
from edgekiln.targets.errors import ConversionError
from edgekiln.targets.int8 import Int8Options

NAME = "tflite"
SUFFIX = ".tflite"
RUNTIME = "ai-edge-litert"
PRECISION = "int8"  # weights and activations, as the cost model counts bytes
MIXED_PRECISION = True  # layers can stay float inside an INT8 model
# encoding -> precision, as the cost model and the latency references name it. fp16 stores
# float16 weights that CPU kernels dequantize to float32; GPU delegates compute in fp16.
ENCODINGS = {"fp32": "float", "fp16": "fp16", "int8": "int8", "dynamic": "dynamic"}


def export_int8(model: torch.nn.Module, example: torch.Tensor, calibration: np.ndarray,
                path: Path, metadata: dict[str, str], options: Int8Options = Int8Options()) -> dict:
    """Write an INT8 .tflite (INT8 input and output; see `predict` for the scaling), with
    `options.float_layers` left in float. Returns what was applied."""
    import litert_torch
    from litert_torch.quantize.quant_config import QuantConfig

    simulated = pt2e.simulate(model, calibration, options)
    try:
        edge = litert_torch.convert(simulated, (example.cpu(),),
                                    quant_config=QuantConfig(pt2e_quantizer=pt2e.quantizer(
                                        options, qat=pt2e.uses_qat_state(options))))
        edge.export(str(path))
    except Exception as e:
        raise ConversionError(NAME, str(e).splitlines()[0] if str(e) else type(e).__name__) from e
    write_metadata(path, metadata)
    return {"calibrator": pt2e.calibrator_used(options), "per_channel": options.per_channel,
            "float_layers": list(options.float_layers), "calibration_images": len(calibration)}


def export(model: torch.nn.Module, example: torch.Tensor, calibration: np.ndarray, path: Path,
           metadata: dict[str, str], encoding: str = "int8", options: Int8Options = Int8Options()) -> dict:
    """Write the model in `encoding` (see ENCODINGS); returns what was applied.
    dynamic: INT8 weights, activations quantized at run time (no calibration)."""
    if encoding == "int8":
        return export_int8(model, example, calibration, path, metadata, options)
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown TFLite encoding {encoding!r}; known: {', '.join(ENCODINGS)}")
    import litert_torch

    try:
        litert_torch.convert(model.cpu().eval(), (example.cpu(),)).export(str(path))
        # Metadata first: ai-edge-quantizer keeps it, and may write its weights past the
        # flatbuffer (buffer offsets), which write_metadata cannot repack.
        write_metadata(path, metadata)
        if encoding != "fp32":
            path.write_bytes(_ai_edge_quantized(path, encoding))
    except ConversionError:
        raise
    except Exception as e:
        raise ConversionError(NAME, str(e).splitlines()[0] if str(e) else type(e).__name__) from e
    return {"per_channel": True, "activations": "quantized at run time"} if encoding == "dynamic" else {}


def _ai_edge_quantized(fp32: Path, encoding: str) -> bytes:
    """The fp32 model at `fp32` with fp16 weights (float casting) or dynamic-range INT8
    weights (ai-edge-quantizer's dynamic_wi8_afp32 recipe: per-channel)."""
    from ai_edge_quantizer import qtyping, quantizer, recipe

    qt = quantizer.Quantizer(str(fp32))
    if encoding == "fp16":
        qt.update_quantization_recipe(
            regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
            algorithm_key=quantizer.AlgorithmName.FLOAT_CASTING,
            op_config=qtyping.OpQuantizationConfig(
                weight_tensor_config=qtyping.TensorQuantizationConfig(num_bits=16, dtype=qtyping.TensorDataType.FLOAT),
                compute_precision=qtyping.ComputePrecision.FLOAT, explicit_dequantize=True))
    else:
        qt.load_quantization_recipe(recipe.dynamic_wi8_afp32())
    return bytes(qt.quantize(enable_progress_bar=False, enable_progress_report=False).quantized_model)


def write_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Append each key/value as a named TFLite metadata buffer (schema `Model.metadata`)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(path.read_bytes()), 0)
    if any((b.offset or 0) > 1 for b in model.buffers or []):  # data stored past the flatbuffer
        raise ConversionError(NAME, f"{path.name} keeps its weights outside the flatbuffer; "
                                    "edgekiln cannot add metadata to it")
    model.metadata = list(model.metadata or [])
    for key, value in metadata.items():
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(value.encode(), dtype=np.uint8)
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name, entry.buffer = key, len(model.buffers) - 1
        model.metadata.append(entry)
    builder = flatbuffers.Builder(path.stat().st_size + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(builder.Output())


def read_metadata(path: Path) -> dict[str, str]:
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(path.read_bytes(), 0)
    out = {}
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        data = model.Buffers(entry.Buffer()).DataAsNumpy()
        out[entry.Name().decode()] = bytes(data).decode() if isinstance(data, np.ndarray) else ""
    return out


def _session(path: Path, threads: int):
    from edgekiln.targets.runtime_bench import TfliteSession

    try:
        return TfliteSession(str(path), threads)
    except RuntimeError as e:  # the converter wrote an op the runtime cannot prepare
        raise ConversionError(NAME, f"the converted model does not run in {RUNTIME}: "
                                    f"{' '.join(str(e).split())}") from e


def load(path: Path) -> None:
    """Load the artifact in its runtime and run one inference (ConversionError if it cannot)."""
    from edgekiln.targets.runtime_bench import predict as run_each

    session = _session(path, 1)
    run_each(session, np.zeros((1, *session.input_shape[1:]), dtype=np.float32))


def predict(path: Path, images: np.ndarray, threads: int = 1) -> np.ndarray:
    """Logits for preprocessed float32 NCHW `images`, computed one by one by ai-edge-litert."""
    from edgekiln.targets.runtime_bench import predict as run_each

    return run_each(_session(path, threads), images)
