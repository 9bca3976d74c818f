"""TFLite (LiteRT) artifacts: INT8 through litert-torch's PT2E quantizer, run in ai-edge-litert."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgekiln.targets.errors import ConversionError

NAME = "tflite"
SUFFIX = ".tflite"
RUNTIME = "ai-edge-litert"
PRECISION = "int8"  # weights and activations, as the cost model counts bytes


def _quantizer():
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config

    return PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))


def pt2e_int8(model: torch.nn.Module, calibration: np.ndarray) -> torch.fx.GraphModule:
    """INT8-simulated copy of `model` (static activations, per-channel weights), calibrated
    on `calibration` (preprocessed float32 NCHW). It runs in torch at any batch size, so it
    measures the accuracy the TFLite INT8 artifact should have."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    model = model.cpu().eval()
    # A batch-1 example would specialise the batch dimension to the constant 1.
    example = torch.from_numpy(np.repeat(calibration[:1], 2, axis=0)).float()
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        graph = torch.export.export(model, (example,), dynamic_shapes=({0: batch},)).module()
    except Exception as e:
        raise ConversionError(NAME, f"torch.export failed: {str(e).splitlines()[0]}") from e
    prepared = prepare_pt2e(graph, _quantizer())
    with torch.no_grad():
        for i in range(len(calibration)):
            prepared(torch.from_numpy(calibration[i : i + 1]).float())
    return convert_pt2e(prepared, fold_quantize=False)


def export_int8(model: torch.nn.Module, example: torch.Tensor, calibration: np.ndarray,
                path: Path, metadata: dict[str, str]) -> None:
    """Write a fully INT8 .tflite (INT8 input and output; see `predict` for the scaling)."""
    import litert_torch
    from litert_torch.quantize.quant_config import QuantConfig

    quantized = pt2e_int8(model, calibration)
    try:
        edge = litert_torch.convert(quantized, (example.cpu(),),
                                    quant_config=QuantConfig(pt2e_quantizer=_quantizer()))
        edge.export(str(path))
    except Exception as e:
        raise ConversionError(NAME, str(e).splitlines()[0] if str(e) else type(e).__name__) from e
    write_metadata(path, metadata)


def write_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Append each key/value as a named TFLite metadata buffer (schema `Model.metadata`)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(path.read_bytes()), 0)
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
