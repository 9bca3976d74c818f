"""ExecuTorch artifacts (.pte with the XNNPACK delegate), run in ExecuTorch's own runtime
(`executorch.runtime`): fp32, or INT8 through XNNPACKQuantizer and torchao's PT2E
prepare/convert, calibrated on the same sample as the other formats (after QAT: the QAT
weights, re-calibrated).

A .pte has no free-form metadata table. edgekiln stores its metadata (labels,
preprocessing, description, cost features) as a constant method of the program,
`edgekiln_metadata`, which returns the UTF-8 JSON of the key/values as a uint8 tensor:

    program = Runtime.get().load_program("model.pte")
    meta = json.loads(bytes(program.load_method("edgekiln_metadata").execute([])[0].numpy()))

(`Module::execute("edgekiln_metadata")` from C++, Swift or Kotlin). The model itself is the
`forward` method: float32 NCHW images in, float32 logits out.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from edgekiln.targets.errors import ConversionError, RunnerFailed
from edgekiln.targets.format import Format, Session, register_format
from edgekiln.targets.int8 import Int8Options

NAME = "executorch"
METHOD, METADATA_METHOD = "forward", "edgekiln_metadata"


class ExecutorchSession(Session):
    """The `forward` method of a .pte in ExecuTorch's runtime, on `threads` XNNPACK threads."""

    def __init__(self, path: str, threads: int = 1):
        import torch
        from executorch.runtime import Runtime

        try:  # the XNNPACK threadpool is process-wide; the pybindings expose its size
            from executorch.extension.pybindings import portable_lib

            portable_lib._unsafe_reset_threadpool(threads)
        except (ImportError, AttributeError):
            pass
        self._torch = torch
        self.method = Runtime.get().load_program(path).load_method(METHOD)
        self._shape = tuple(int(d) for d in self.method.metadata.input_tensor_meta(0).sizes())
        self.runtime = "executorch"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self._shape

    def set_input(self, x: np.ndarray) -> None:
        self._input = self._torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    def invoke(self) -> None:
        self._out = self.method.execute([self._input])[0]

    def output(self) -> np.ndarray:
        return self._out.numpy()


_ITERATION = re.compile(r"Iteration \d+ of \d+:\s*([\d.e+-]+)\s*ms")


def parse_executor_runner(text: str, warmup: int = 0) -> tuple[dict, float | None, list[str]]:
    """Latency (ms) from executor_runner's per-iteration log lines ("Iteration 3 of 110:
    0.21 ms"), the first `warmup` iterations dropped. It reports no memory figure."""
    times = np.array([float(m.group(1)) for m in _ITERATION.finditer(text)])
    if len(times) <= warmup:
        raise RunnerFailed("executor_runner printed no per-iteration times (built without logging?): "
                           + " ".join(text.split()[-40:]))
    times = times[warmup:]
    latency = {"p50": float(np.percentile(times, 50)), "p90": float(np.percentile(times, 90)),
               "mean": float(times.mean()), "std": float(times.std()), "runs": int(len(times))}
    return latency, None, ["executor_runner reports no peak memory"]


@register_format
class Executorch(Format):
    NAME = NAME
    SUFFIX = ".pte"
    RUNTIME = "executorch"
    RUNTIME_MODULE = "executorch.runtime"
    PRECISION = "int8"  # weights and activations (XNNPACK QS8)
    ENCODINGS = {"fp32": "float", "int8": "int8"}
    TOOLS = {"executorch": "executorch"}
    EXTRA = "executorch"
    PRECHECK_ORDER = 30  # lowering to XNNPACK is the slowest conversion
    ADB_TOOL = "/data/local/tmp/executor_runner"

    def export(self, model, example, calibration: np.ndarray, path: Path, metadata: dict[str, str],
               encoding: str = "int8", options: Int8Options = Int8Options()) -> dict:
        """Write a .pte lowered to XNNPACK in `encoding` (fp32 or int8), with `metadata` as its
        `edgekiln_metadata` constant method. int8: XNNPACKQuantizer's symmetric scheme
        (per-channel weights unless `options` say per tensor), activations calibrated on
        `calibration`; no layer is kept in float."""
        if encoding not in self.ENCODINGS:
            raise ValueError(f"ExecuTorch has no {encoding!r} encoding here; known: {', '.join(self.ENCODINGS)}")
        if options.float_layers:
            raise ValueError("ExecuTorch artifacts do not keep layers in float (no mixed precision)")
        import torch
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        model, example = model.cpu().eval(), (example.cpu(),)
        applied: dict = {}
        try:
            if encoding == "int8":
                model, applied = _quantized(model, example, calibration, options)
            program = to_edge_transform_and_lower(
                torch.export.export(model, example), partitioner=[XnnpackPartitioner()],
                constant_methods={METADATA_METHOD: _metadata_tensor(metadata)}).to_executorch()
        except Exception as e:  # the exporter and the lowering raise many types; the message names the op
            raise ConversionError(NAME, str(e).splitlines()[0] if str(e) else type(e).__name__) from e
        path.write_bytes(program.buffer)
        return applied

    def write_metadata(self, path: Path, metadata: dict[str, str]) -> None:
        raise ConversionError(NAME, "a .pte's metadata is written at export (a constant method); "
                                    "it cannot be added afterwards")

    def read_metadata(self, path: Path) -> dict[str, str]:
        from executorch.runtime import Runtime

        program = Runtime.get().load_program(str(path))
        if METADATA_METHOD not in program.method_names:
            return {}
        data = program.load_method(METADATA_METHOD).execute([])[0]
        return json.loads(bytes(data.numpy().astype(np.uint8)).decode())

    def check(self, path: Path, input_shape: tuple[int, ...], encoding: str | None = None) -> dict:
        """The program has the `forward` method with the exported input shape, and the metadata
        method; what it found."""
        from executorch.runtime import Runtime

        try:
            program = Runtime.get().load_program(str(path))
            methods = sorted(program.method_names)
            shape = tuple(int(d) for d in program.load_method(METHOD).metadata.input_tensor_meta(0).sizes())
        except Exception as e:  # the runtime reports a bad program as RuntimeError or ValueError
            raise ConversionError(NAME, f"{path.name} does not load in ExecuTorch: {e}") from e
        if METHOD not in methods or shape != tuple(input_shape):
            raise ConversionError(NAME, f"program has methods {methods} and input {list(shape)}, "
                                        f"expected '{METHOD}' with input {list(input_shape)}")
        return {"methods": methods, "input": list(shape)}

    def open_session(self, path, threads: int = 1, **_) -> ExecutorchSession:
        return ExecutorchSession(str(path), threads)

    def adb_command(self, profile, remote_artifact: str) -> list[str]:
        runner = profile.runner
        # No warm-up flag: the warm-up runs are executed and dropped by parse_adb_output.
        return [self.adb_tool(profile), f"--model_path={remote_artifact}", f"--method_name={METHOD}",
                f"--num_executions={runner.warmup_runs + runner.runs}",
                f"--cpu_threads={profile.runtime.threads}", "--print_output=none"]

    def parse_adb_output(self, text: str, profile) -> tuple[dict, float | None, list[str]]:
        return parse_executor_runner(text, profile.runner.warmup_runs)


def _metadata_tensor(metadata: dict[str, str]):
    import torch

    return torch.tensor(list(json.dumps(metadata).encode()), dtype=torch.uint8)


def _quantized(model, example: tuple, calibration: np.ndarray, options: Int8Options):
    """The model with XNNPACK's INT8 scheme applied (PT2E), calibrated; and what was applied."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer, get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=options.per_channel))
    prepared = prepare_pt2e(torch.export.export(model, example).module(), quantizer)
    with torch.no_grad():
        for image in calibration:
            prepared(torch.from_numpy(np.ascontiguousarray(image[None], dtype=np.float32)))
    applied = {"calibrator": "XNNPACKQuantizer's default observers (symmetric)", "per_channel": options.per_channel,
               "float_layers": [], "calibration_images": len(calibration)}
    return convert_pt2e(prepared), applied
