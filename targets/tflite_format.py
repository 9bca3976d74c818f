"""TFLite (LiteRT) artifacts: INT8 through litert-torch's PT2E quantizer, run in ai-edge-litert."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgekiln.targets.errors import ConversionError
from edgekiln.targets.timing import Latency, measure

NAME = "tflite"
SUFFIX = ".tflite"
RUNTIME = "ai-edge-litert"


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


class _Runner:
    """One ai-edge-litert interpreter, taking float input and giving float logits whatever
    the model's own input/output types (INT8 models are fed through their scale and zero point)."""

    def __init__(self, path: Path, threads: int):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        try:
            self.interpreter.allocate_tensors()
        except RuntimeError as e:  # the converter wrote an op the runtime cannot prepare
            raise ConversionError(NAME, f"the converted model does not run in {RUNTIME}: "
                                        f"{' '.join(str(e).split())}") from e
        self.inp = self.interpreter.get_input_details()[0]
        self.out = self.interpreter.get_output_details()[0]

    def set_input(self, x: np.ndarray) -> None:
        dtype = self.inp["dtype"]
        if np.issubdtype(dtype, np.integer):
            scale, zero = self.inp["quantization"]
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        self.interpreter.set_tensor(self.inp["index"], x.astype(dtype))

    def output(self) -> np.ndarray:
        y = self.interpreter.get_tensor(self.out["index"])
        if np.issubdtype(y.dtype, np.integer):
            scale, zero = self.out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y


def predict(path: Path, images: np.ndarray, threads: int = 1) -> np.ndarray:
    """Logits for preprocessed float32 NCHW `images`, computed one by one by ai-edge-litert."""
    runner = _Runner(path, threads)
    outs = []
    for image in images:
        runner.set_input(image[None])
        runner.interpreter.invoke()
        outs.append(runner.output()[0])
    return np.stack(outs)


def benchmark(path: Path, sample: np.ndarray, threads: int, warmup: int, runs: int) -> Latency:
    """Host latency of one batch-1 invoke in ai-edge-litert (XNNPACK) with `threads` threads."""
    runner = _Runner(path, threads)
    runner.set_input(sample[None])
    return measure(runner.interpreter.invoke, warmup, runs)
