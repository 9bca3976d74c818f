"""TFLite (LiteRT) artifacts, run in ai-edge-litert: INT8 through litert-torch's PT2E quantizer
(see pt2e.py; layers can be kept in float: mixed precision), or fp32 from litert-torch, with
fp16 weights or dynamic-range INT8 applied to it by ai-edge-quantizer.

What an app sees (`io`, targets/formats/tflite/litert_model.py): by default NHWC float32 pixels in [-1, 1]
and float32 class probabilities, with the standard LiteRT Model Metadata (image properties,
normalization, the labels as an associated file) that MediaPipe's ImageClassifier reads;
"uint8" takes raw RGB pixels; "int8" keeps the converted body's NCHW INT8 input and output."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from edgekiln.targets.errors import ConversionError, RunnerFailed
from edgekiln.targets.format import Format, Session, register_format
from edgekiln.targets.formats.tflite import litert_model
from edgekiln.targets.int8 import Int8Options

NAME = "tflite"


def _buffers(path: str) -> dict[str, bytes]:
    """The model's named metadata buffers (raw bytes)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(open(path, "rb").read(), 0)
    out = {}
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        data = model.Buffers(entry.Buffer()).DataAsNumpy()
        out[entry.Name().decode()] = bytes(data) if isinstance(data, np.ndarray) else b""
    return out


class TfliteSession(Session):
    """An ai-edge-litert interpreter fed edgekiln's preprocessed float NCHW images and giving
    float scores, whatever the model's own interface: an app-facing input (NHWC pixels, see
    `edgekiln_io` in its metadata) gets the images turned back into what an app feeds, an
    INT8 one is fed through its scale and zero point."""

    def __init__(self, path: str, threads: int, delegate: str = "xnnpack"):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        if delegate not in ("xnnpack", "none"):
            raise ValueError(f"delegate {delegate!r} is not available to ai-edge-litert on this machine "
                             "(xnnpack and none are)")
        resolver = (OpResolverType.AUTO if delegate == "xnnpack"
                    else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        self.interpreter = Interpreter(model_path=path, num_threads=threads,
                                       experimental_op_resolver_type=resolver)
        self.interpreter.allocate_tensors()  # RuntimeError: an op the runtime cannot prepare
        self.inp = self.interpreter.get_input_details()[0]
        self.out = self.interpreter.get_output_details()[0]
        self.runtime = "ai-edge-litert"
        buffers = _buffers(path)
        self.io = buffers.get("edgekiln_io", b"int8").decode()
        if self.io in ("float", "uint8"):
            pre = json.loads(buffers["preprocessing"])
            self._mean = np.array(pre["mean"], dtype=np.float32).reshape(1, 3, 1, 1)
            self._std = np.array(pre["std"], dtype=np.float32).reshape(1, 3, 1, 1)

    @property
    def input_shape(self) -> tuple[int, ...]:
        shape = tuple(int(d) for d in self.inp["shape"])
        return shape if self.io == "int8" else (shape[0], shape[3], shape[1], shape[2])  # as fed: NCHW

    def set_input(self, x: np.ndarray) -> None:
        if self.io in ("float", "uint8"):  # back to pixels, as an app has them
            pixels = ((x * self._std + self._mean) * 255.0).transpose(0, 2, 3, 1)
            x = (np.clip(np.round(pixels), 0, 255) if self.io == "uint8" else (pixels - 127.5) / 127.5)
            self.interpreter.set_tensor(self.inp["index"], x.astype(self.inp["dtype"]))
            return
        dtype = self.inp["dtype"]
        if np.issubdtype(dtype, np.integer):
            scale, zero = self.inp["quantization"]
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        self.interpreter.set_tensor(self.inp["index"], x.astype(dtype))

    def invoke(self) -> None:
        self.interpreter.invoke()

    def output(self) -> np.ndarray:
        y = self.interpreter.get_tensor(self.out["index"])
        if np.issubdtype(y.dtype, np.integer):
            scale, zero = self.out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y


_STAT = re.compile(r"count=(\d+)\s.*?avg=([\d.e+]+)\s+std=([\d.e+]+)(?:.*?median=([\d.e+]+))?(?:.*?p95=([\d.e+]+))?")


def parse_benchmark_model(text: str) -> tuple[dict, float | None, list[str]]:
    """Latency (ms), peak memory (MB) and notes from benchmark_model's log. Its last
    `count=... avg=... std=... [p5= median= p95=]` line is the timed runs (in microseconds)."""
    stats = [m for m in _STAT.finditer(text)]
    if not stats:
        raise RunnerFailed("benchmark_model printed no timing statistics: "
                           + " ".join(text.split()[-40:]))
    count, avg, std, median, p95 = stats[-1].groups()
    notes = []
    if median is not None:
        p50 = float(median) / 1000
    else:
        p50 = float(avg) / 1000
        notes.append("benchmark_model printed no median: p50 is its mean")
    p90 = None
    if p95 is not None:
        p90 = float(p95) / 1000
        notes.append("benchmark_model reports p5/median/p95: the p90 figure is its p95 (an upper bound)")
    peak = re.search(r"Overall peak memory footprint \(MB\) via periodic monitoring:\s*([\d.]+)", text)
    delta = re.search(r"Memory footprint delta from the start of the tool \(MB\):.*?overall=([\d.]+)", text)
    memory = float(peak.group(1)) if peak else float(delta.group(1)) if delta else None
    latency = {"p50": p50, "p90": p90, "mean": float(avg) / 1000, "std": float(std) / 1000, "runs": int(count)}
    return latency, memory, notes


@register_format
class Tflite(Format):
    NAME = NAME
    SUFFIX = ".tflite"
    RUNTIME = "ai-edge-litert"
    RUNTIME_MODULE = "ai_edge_litert.interpreter"
    PRECISION = "int8"  # weights and activations, as the cost model counts bytes
    MIXED_PRECISION = True  # layers can stay float inside an INT8 model
    INT16_LAYERS = True  # ... or take int16 activations (ai-edge-quantizer's per-layer recipe)
    # litert-torch's INT8 path is the PT2E scheme, simulated in torch here (pt2e.py): the
    # quantize stage decides on it, and a mixed-precision search scores its steps there.
    INT8_SIMULATION = "edgekiln.targets.formats.tflite.pt2e"
    # fp16 stores float16 weights that CPU kernels dequantize to float32; GPU delegates
    # compute in fp16.
    # int16x8: INT8 weights, int16 activations (ai-edge-quantizer's static_wi8_ai16), calibrated
    # like INT8: for the layers whose activations INT8 cannot hold; built only on request.
    ENCODINGS = {"fp32": "float", "fp16": "fp16", "int8": "int8", "dynamic": "dynamic", "int16x8": "int16x8"}
    ON_REQUEST = ("int16x8",)
    RUNTIME_OPTIONS = {"delegate": ("xnnpack", ("xnnpack", "gpu", "nnapi", "none"))}
    IO_MODES = ("float", "uint8", "int8")
    BODY_IO = "int8"
    TOOLS = {"litert_torch": "litert-torch", "ai_edge_litert": "ai-edge-litert"}
    EXTRA = "tflite"
    PRECHECK_ORDER = 20
    ADB_TOOL = "/data/local/tmp/benchmark_model"

    def interface(self, io: str, preprocessing: dict) -> dict:
        size = preprocessing["image_size"]
        if io == "int8":
            return {"input": {**super().interface(io, preprocessing)["input"], "dtype": "int8",
                              "quantization": "the input tensor's scale and zero point"},
                    "output": "int8 logits (the output tensor's scale and zero point)"}
        values = ("RGB pixels 0..255" if io == "uint8"
                  else "(pixel - 127.5) / 127.5, RGB (the metadata's NormalizationOptions)")
        scaling = {} if io == "uint8" else {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
        return {"input": {"layout": "NHWC", "shape": [1, size, size, 3], "dtype": io if io == "uint8" else "float32",
                          "values": values, **scaling},
                "output": "float32 probabilities, one per label (labels.txt inside the model)",
                "metadata": "LiteRT Model Metadata: image properties, normalization, labels"}

    def io_problem(self, io: str, encoding: str) -> str | None:
        if io == "int8" and encoding != "int8":
            return f"io = 'int8' is the INT8 body's own interface: a {encoding} artifact has none"
        return super().io_problem(io, encoding)

    def export_int8(self, model, example, calibration: np.ndarray, path: Path, metadata: dict[str, str],
                    options: Int8Options = Int8Options()) -> dict:
        """Write an INT8 .tflite with `options.float_layers` left in float, its interface as
        `metadata` asks (see `io_of`). Returns what was applied."""
        import litert_torch
        from litert_torch.quantize.quant_config import QuantConfig

        from edgekiln.targets.formats.tflite import pt2e

        metadata = {**metadata, "edgekiln_io": self.io_of(metadata)}
        if options.float_layers and options.sensitive_as == "int16":
            return self._export_int16_layers(model, example, calibration, path, metadata, options)

        simulated = pt2e.simulate(model, calibration, options)
        try:
            edge = litert_torch.convert(simulated, (example.cpu(),),
                                        quant_config=QuantConfig(pt2e_quantizer=pt2e.quantizer(
                                            options, qat=pt2e.uses_qat_state(options))))
            edge.export(str(path))
        except Exception as e:
            raise ConversionError(NAME, str(e).splitlines()[0] if str(e) else type(e).__name__) from e
        standard, files = self._app_interface(path, metadata)
        self.write_metadata(path, {**metadata, **standard})
        litert_model.append_associated_files(path, files)
        return {"calibrator": pt2e.calibrator_used(options), "per_channel": options.per_channel,
                "float_layers": list(options.float_layers), "calibration_images": len(calibration)}

    def export(self, model, example, calibration: np.ndarray, path: Path, metadata: dict[str, str],
               encoding: str = "int8", options: Int8Options = Int8Options()) -> dict:
        """Write the model in `encoding` (see ENCODINGS); returns what was applied.
        dynamic: INT8 weights, activations quantized at run time (no calibration)."""
        if encoding == "int8":
            return self.export_int8(model, example, calibration, path, metadata, options)
        if encoding not in self.ENCODINGS:
            raise ValueError(f"unknown TFLite encoding {encoding!r}; known: {', '.join(self.ENCODINGS)}")
        if metadata.get("edgekiln_io") == "int8":
            raise ValueError(self.io_problem("int8", encoding))
        metadata = {**metadata, "edgekiln_io": self.io_of(metadata)}
        self._convert_and_wrap(
            model, example, path, metadata,
            body=(lambda fp32: self._int16x8(fp32, calibration)) if encoding == "int16x8" else None,
            weights=(lambda wrapped: self._ai_edge_quantized(wrapped, encoding)) if encoding in ("fp16", "dynamic")
            else None)
        if encoding == "int16x8":
            return {"per_channel": True, "activations": "int16, calibrated", "calibration_images": len(calibration)}
        return {"per_channel": True, "activations": "quantized at run time"} if encoding == "dynamic" else {}

    def _convert_and_wrap(self, model, example, path: Path, metadata: dict[str, str], body=None,
                          weights=None) -> None:
        """Convert `model` to an fp32 .tflite at `path`; `body(path)`, when given, returns it
        quantized (on its own input, before the app's interface wraps it); then the interface
        and metadata; then `weights(path)`, when given, returns it with its weights recast
        (fp16, dynamic). ConversionError for anything the converters raise."""
        import litert_torch

        try:
            litert_torch.convert(model.cpu().eval(), (example.cpu(),)).export(str(path))
            if body is not None:
                path.write_bytes(body(path))
            standard, files = self._app_interface(path, metadata)
            # Metadata first: ai-edge-quantizer keeps it, and may write its weights past the
            # flatbuffer (buffer offsets), which write_metadata cannot repack.
            self.write_metadata(path, {**metadata, **standard})
            if weights is not None:
                path.write_bytes(weights(path))
            litert_model.append_associated_files(path, files)
        except ConversionError:
            raise
        except Exception as e:
            raise ConversionError(NAME, str(e).splitlines()[0] if str(e) else type(e).__name__) from e

    def _app_interface(self, path: Path, metadata: dict[str, str]) -> tuple[dict[str, bytes], dict[str, str]]:
        """Wrap the converted body in the interface `metadata["edgekiln_io"]` asks for
        (litert_model.adapt_io); returns the standard Model Metadata buffer and the associated
        files that describe it (none for the body's own int8 interface)."""
        io = metadata["edgekiln_io"]
        if io == "int8":
            return {}, {}
        labels, pre = json.loads(metadata["labels"]), json.loads(metadata["preprocessing"])
        litert_model.adapt_io(path, io, pre["mean"], pre["std"])
        standard = litert_model.model_metadata(
            metadata.get("name", "image classifier"), metadata.get("description", ""),
            metadata.get("edgekiln_version", ""), io, int(pre["image_size"]), len(labels))
        return {litert_model.METADATA_NAME: standard}, {litert_model.LABELS_FILE: litert_model.labels_text(labels)}

    def _export_int16_layers(self, model, example, calibration: np.ndarray, path: Path, metadata: dict[str, str],
                             options: Int8Options) -> dict:
        """INT8 with `options.float_layers` given int16 activations (INT8 weights) instead of
        float: integer-only. ai-edge-quantizer quantizes the converted fp32 body, a8w8 with a
        16-bit-activation recipe on those layers' ops, and requantizes between them."""
        self._convert_and_wrap(model, example, path, metadata,
                               body=lambda fp32: self._int16_layers(fp32, calibration, options.float_layers))
        return {"calibrator": "minmax (ai-edge-quantizer)", "per_channel": True, "float_layers": [],
                "int16_layers": list(options.float_layers), "calibration_images": len(calibration),
                "activations": f"int8; int16 in {len(options.float_layers)} sensitive layer(s)"}

    @staticmethod
    def _int16_layers(body: Path, calibration: np.ndarray, layers: tuple[str, ...]) -> bytes:
        """The converted fp32 body at `body` with INT8 weights and int8 activations, but int16
        ones in the ops of `layers` (torch module names), calibrated on `calibration` (its own
        input). ConversionError naming a layer that matched no op of the body."""
        import copy

        from ai_edge_quantizer import recipe

        wide = recipe.static_wi8_ai16()[0]
        mixed = recipe.static_wi8_ai8() + [{**copy.deepcopy(wide), "regex": _op_scope(layer)} for layer in layers]
        # Ranges are recorded per tensor, whatever their bit width: calibrated once on the
        # uniform recipe (a mixed one calibrates op by op, minutes instead of a second).
        quantized = _ai_edge_static(body, calibration, mixed, calibrate_with=recipe.static_wi8_ai8())
        missing = _layers_without_int16(quantized, layers)
        if missing:
            raise ConversionError(NAME, f"no op of the converted model matched layer(s) {', '.join(missing)}: they "
                                        "cannot be given int16 activations (sensitive_layers = \"int16\")")
        return litert_model.inline_buffers(quantized)  # its interface and metadata are added after

    @staticmethod
    def _int16x8(body: Path, calibration: np.ndarray) -> bytes:
        """The converted fp32 body at `body` with INT8 weights and int16 activations (ai-edge-
        quantizer's static_wi8_ai16 recipe), calibrated on `calibration` (its own input)."""
        from ai_edge_quantizer import recipe

        quantized = _ai_edge_static(body, calibration, recipe.static_wi8_ai16())
        return litert_model.inline_buffers(quantized)  # its interface and metadata are added after

    @staticmethod
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

    def write_metadata(self, path: Path, metadata: dict[str, str | bytes]) -> None:
        """Append each key/value as a named TFLite metadata buffer (schema `Model.metadata`);
        text is stored UTF-8."""
        import flatbuffers
        from ai_edge_litert import schema_py_generated as schema

        model = schema.ModelT.InitFromPackedBuf(bytearray(path.read_bytes()), 0)
        if any((b.offset or 0) > 1 for b in model.buffers or []):  # data stored past the flatbuffer
            raise ConversionError(NAME, f"{path.name} keeps its weights outside the flatbuffer; "
                                        "edgekiln cannot add metadata to it")
        model.metadata = list(model.metadata or [])
        for key, value in metadata.items():
            buffer = schema.BufferT()
            buffer.data = np.frombuffer(value if isinstance(value, bytes) else value.encode(), dtype=np.uint8)
            model.buffers.append(buffer)
            entry = schema.MetadataT()
            entry.name, entry.buffer = key, len(model.buffers) - 1
            model.metadata.append(entry)
        builder = flatbuffers.Builder(path.stat().st_size + 4096)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        path.write_bytes(builder.Output())

    def read_metadata(self, path: Path) -> dict[str, str]:
        """The text metadata buffers (edgekiln's, the converter's); the binary standard Model
        Metadata is left out (see litert_model)."""
        out = {}
        for name, data in _buffers(str(path)).items():
            if name == "TFLITE_METADATA":
                continue
            try:
                out[name] = data.decode()
            except UnicodeDecodeError:
                continue
        return out

    def open_session(self, path, threads: int = 1, delegate: str = "xnnpack", **_) -> TfliteSession:
        return TfliteSession(str(path), threads, delegate)

    def adb_command(self, profile, remote_artifact: str) -> list[str]:
        rt, runner = profile.runtime, profile.runner
        delegate = {"xnnpack": ["--use_xnnpack=true"], "gpu": ["--use_gpu=true"],
                    "nnapi": ["--use_nnapi=true"], "none": ["--use_xnnpack=false"]}[profile.runtime_option("delegate")]
        return [self.adb_tool(profile), f"--graph={remote_artifact}", f"--num_threads={rt.threads}",
                f"--warmup_runs={runner.warmup_runs}", f"--num_runs={runner.runs}",
                "--report_peak_memory_footprint=true", *delegate]

    def parse_adb_output(self, text: str, profile=None) -> tuple[dict, float | None, list[str]]:
        return parse_benchmark_model(text)


def _ai_edge_static(body: Path, calibration: np.ndarray, recipe: list[dict], calibrate_with: list[dict] | None = None
                    ) -> bytes:
    """The fp32 .tflite at `body` quantized by ai-edge-quantizer with `recipe` (static ranges),
    calibrated on `calibration` (its own input) with `calibrate_with` (default: `recipe`)."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import quantizer

    signatures = Interpreter(model_path=str(body)).get_signature_list()
    key = next(iter(signatures))
    name = signatures[key]["inputs"][0]
    images = np.ascontiguousarray(calibration, dtype=np.float32)
    calibrating = quantizer.Quantizer(str(body))
    calibrating.load_quantization_recipe(calibrate_with or recipe)
    ranges = calibrating.calibrate({key: [{name: images[i:i + 1]} for i in range(len(images))]})
    qt = calibrating
    if calibrate_with is not None:
        qt = quantizer.Quantizer(str(body))
        qt.load_quantization_recipe(recipe)
    return bytes(qt.quantize(ranges, enable_progress_bar=False, enable_progress_report=False).quantized_model)


def _op_scope(layer: str) -> str:
    """The regex of the ops litert-torch converted from torch module `layer` ("blocks.1.0.conv_pw"):
    their tensor names carry the module path as "<Type>_<attribute>" segments joined by "/"
    (fused ops join several names with ";")."""
    import re

    return "(^|.*[/;])" + "/".join(f"[^/;]*_{re.escape(part)}" for part in layer.split(".")) + "(;|$).*"


def _layers_without_int16(model: bytes, layers: tuple[str, ...]) -> list[str]:
    """The layers of `layers` none of whose tensors in `model` is int16."""
    from ai_edge_litert.interpreter import Interpreter

    wide = [d["name"] for d in Interpreter(model_content=model).get_tensor_details() if d["dtype"] == np.int16]
    return [layer for layer in layers if not any(re.match(_op_scope(layer), n) for n in wide)]
