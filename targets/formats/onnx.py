"""ONNX artifacts, run in onnxruntime: INT8 QDQ through onnxruntime's static quantization
(layers can be kept in float: mixed precision), or fp32, fp16, or dynamic-range INT8.

What an app sees (`io`): "float" (default) is the model as trained, NCHW float32 normalized
input and logits; "uint8" embeds the normalization, so a client feeds raw NHWC uint8 RGB
pixels. Labels and preprocessing are in metadata_props (keys in docs/guides/app.md), with the
standard ModelProto fields (producer, version, doc string) filled in."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgekiln.targets.errors import ConversionError, RunnerFailed
from edgekiln.targets.format import Format, Session, register_format
from edgekiln.targets.int8 import Int8Options, in_layers

if TYPE_CHECKING:
    import torch

NAME = "onnx"
INPUT, OUTPUT = "input", "logits"
_PROVIDERS = {"cpu": "CPUExecutionProvider", "xnnpack": "XnnpackExecutionProvider",
              "nnapi": "NnapiExecutionProvider", "coreml": "CoreMLExecutionProvider"}


def export_float(model: "torch.nn.Module", example: "torch.Tensor", path: Path) -> None:
    import torch

    # The TorchScript-based exporter inlines weights into one file; the dynamo
    # exporter may write a separate .data file, which a single artifact must not need.
    try:
        torch.onnx.export(
            model, (example,), str(path), dynamo=False, opset_version=17,
            input_names=[INPUT], output_names=[OUTPUT],
            dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
        )
    except Exception as e:  # the exporter raises many types; the message names the op
        raise ConversionError(NAME, str(e).splitlines()[0] if str(e) else type(e).__name__) from e


def _qat_graph_problem(options: Int8Options) -> str | None:
    """Why an INT8 artifact of a QAT model cannot be QAT's own graph (None: it is): a graph
    with layers kept in float is calibrated afresh, as in TFLite; QAT trained full 8-bit int8
    weights, which a device that wants 7-bit (reduce_range) or uint8 weights would run
    saturating or slowly, so there quantize_static calibrates its own."""
    if options.qat_state is None:
        return "no QAT state"
    if options.qat_scheme is None:
        return "the INT8 simulation QAT trained under is not named (Int8Options.qat_scheme)"
    if options.float_layers:
        return "layers kept in float: calibrated afresh"
    if options.reduce_range or options.weight_type != "int8":
        return (f"the device's kernels want {options.weight_type} weights"
                + (" of 7 bits (reduce_range)" if options.reduce_range else "")
                + "; QAT trained full 8-bit int8 ones: calibrated afresh")
    return None


def _for_onnxruntime(path: Path) -> None:
    """The exported QAT graph made what quantize_static would have written around the same
    numbers. PT2E quantizes activations to int8; onnxruntime's CPU kernels are built for uint8
    activations with int8 weights. The same numbers as uint8 are the int8 ones plus 128, zero
    point included: every activation QuantizeLinear's zero point, and its DequantizeLinear's,
    moves up by 128 (the weights', whose input is an INT8 constant, stay). Bit-exact; 0.32 ->
    0.24 ms on a QAT MobileNetV3 on an x86 host. And the exporter's per-node debugging
    metadata (the torch graph, stack traces with this machine's paths: a fifth of the file)
    does not ship."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    quantized = {node.output[0] for node in graph.node if node.op_type == "QuantizeLinear"}
    zero_points = {node.input[2] for node in graph.node if len(node.input) > 2 and (
        node.op_type == "QuantizeLinear" or (node.op_type == "DequantizeLinear" and node.input[0] in quantized))}
    weights = {node.input[2] for node in graph.node if node.op_type == "DequantizeLinear" and len(node.input) > 2
               and node.input[0] not in producer}
    shift = not zero_points & weights  # a zero point shared by an activation and a weight: no shift
    for tensor in graph.initializer:
        if shift and tensor.name in zero_points and tensor.data_type == onnx.TensorProto.INT8:
            shifted = numpy_helper.to_array(tensor).astype(np.int16) + 128
            tensor.CopyFrom(numpy_helper.from_array(shifted.astype(np.uint8), tensor.name))
    del graph.value_info[:]  # the recorded types of the quantized activations were int8; onnxruntime infers them
    for node in graph.node:
        del node.metadata_props[:]
    onnx.save(model, str(path))


class _Reader:
    """onnxruntime CalibrationDataReader over an array of model inputs."""

    def __init__(self, images: np.ndarray):
        self._it = iter(images[i : i + 1] for i in range(len(images)))

    def get_next(self):
        x = next(self._it, None)
        return None if x is None else {INPUT: x}


def to_pixels(images: np.ndarray, mean, std) -> np.ndarray:
    """Preprocessed float NCHW images back to the NHWC uint8 RGB pixels they came from."""
    m = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)
    return np.clip(np.round((images * s + m) * 255.0), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def _raw_pixels_model(model, mean, std):
    """`model` behind its own normalization: NHWC uint8 RGB pixels in."""
    import torch

    class RawPixels(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

        def forward(self, pixels):
            x = pixels.permute(0, 3, 1, 2).float() / 255.0
            return self.model((x - self.mean) / self.std)

    return RawPixels().eval()


_CALIBRATE_METHOD = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


def module_of(node_name: str) -> str:
    """The torch module path of a node written by the TorchScript exporter, from its scope:
    "/blocks/blocks.0/blocks.0.0/conv_dw/Conv" -> "blocks.0.0.conv_dw"."""
    path = ""
    for part in node_name.strip("/").split("/")[:-1]:
        path = part if not path or part.startswith(path + ".") else f"{path}.{part}"
    return path


class OnnxSession(Session):
    """An onnxruntime session with `threads` intra-op threads on one execution provider."""

    def __init__(self, path: str, threads: int, execution_provider: str = "cpu", spinning: bool = True):
        import onnxruntime as ort

        provider = _PROVIDERS.get(execution_provider, execution_provider)
        if provider not in ort.get_available_providers():
            raise ValueError(f"execution provider {execution_provider!r} is not available in this "
                             f"onnxruntime ({', '.join(ort.get_available_providers())})")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        if not spinning:  # idle threads that spin would take the cores of the session timed next
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(path, options, providers=[provider])
        self.input = self.session.get_inputs()[0]
        self.runtime = "onnxruntime"
        self._feed: dict | None = None
        self.pixels = self.input.type == "tensor(uint8)"  # raw NHWC pixels in (io = "uint8")
        if self.pixels:
            pre = json.loads(self.session.get_modelmeta().custom_metadata_map["preprocessing"])
            self._mean, self._std = pre["mean"], pre["std"]

    @property
    def input_shape(self) -> tuple[int, ...]:
        shape = tuple(d if isinstance(d, int) else 1 for d in self.input.shape)
        return (shape[0], shape[3], shape[1], shape[2]) if self.pixels else shape  # as fed: NCHW

    def model_input(self, x: np.ndarray) -> np.ndarray:
        """Preprocessed float NCHW images as this model takes them."""
        return to_pixels(x, self._mean, self._std) if self.pixels else x.astype(np.float32)

    def run_batch(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input.name: self.model_input(x)})[0]

    def set_input(self, x: np.ndarray) -> None:
        self._feed = {self.input.name: self.model_input(x)}

    def invoke(self) -> None:
        self._out = self.session.run(None, self._feed)[0]

    def output(self) -> np.ndarray:
        return self._out


def parse_perf_test(text: str) -> tuple[dict, float | None, list[str]]:
    """Latency (ms) and peak memory (MB) from onnxruntime_perf_test's summary. Percentile
    lines are in seconds ("P50 Latency: 0.0012 s", older builds "P50 Latency is 0.0012 sec")."""
    import re

    def seconds(label: str) -> float | None:
        m = re.search(rf"{label} Latency(?::| is)\s*([\d.e+-]+)\s*s", text)
        return None if m is None else float(m.group(1)) * 1000

    mean = re.search(r"Average (?:inference )?time cost:\s*([\d.e+-]+)\s*ms", text)
    runs = re.search(r"Total (?:inference requests|iterations):\s*(\d+)", text)
    if mean is None:
        raise RunnerFailed("onnxruntime_perf_test printed no latency summary: " + " ".join(text.split()[-40:]))
    notes = []
    p50 = seconds("P50")
    if p50 is None:  # builds before percentiles were added print the mean only
        p50 = float(mean.group(1))
        notes.append("onnxruntime_perf_test printed no percentiles: p50 is its mean, p90 unknown")
    peak = re.search(r"Peak working set size:\s*(\d+)\s*bytes", text)
    latency = {"p50": p50, "p90": seconds("P90"), "mean": float(mean.group(1)), "std": None,
               "runs": int(runs.group(1)) if runs else None}
    return latency, None if peak is None else int(peak.group(1)) / 2**20, notes


def int8_types(profile) -> tuple[str, bool, str]:
    """(weight type, reduce_range, why) of INT8 ONNX weights for `profile`'s device: its
    [int8] where set, else from the CPU that runs it. onnxruntime multiplies uint8
    activations by int8 weights (U8S8) with VNNI (x86) or the dot-product instructions (ARM),
    its fastest INT8; x86 kernels without VNNI (AVX2's vpmaddubsw) saturate on U8S8, which
    7-bit weights (reduce_range) prevent (benchmarks/onnx_int8_weight_types.py)."""
    spec = profile.int8
    weight_type, reduce_range, why = "int8", False, "U8S8: the device's kernels multiply uint8 by int8 at full speed"
    if profile.runner.kind == "host":
        from edgekiln.targets.runners.host import host_isa

        isa = host_isa()
        if "no VNNI" in isa:
            reduce_range, why = True, ("U8S8 with 7-bit weights (reduce_range): this host's x86 CPU has no VNNI, "
                                       "and AVX2's INT8 multiply-add saturates on full 8-bit weights")
        elif isa:
            why = f"U8S8: this host's CPU has {next(i for i in isa if 'VNNI' in i)}, which multiplies uint8 by int8"
        else:
            why = "U8S8: a non-x86 host (onnxruntime's ARM kernels multiply uint8 by int8 with dot products)"
    else:
        why = (f"U8S8: {profile.device} is taken to be an ARM CPU (dot-product kernels) or an x86 one with VNNI; "
               "set [int8] reduce_range = true in its profile for x86 without VNNI")
    if spec.weight_type != "auto":
        weight_type, why = spec.weight_type, f"the profile's [int8] weight_type = {spec.weight_type!r}"
    if spec.reduce_range != "auto":
        reduce_range = spec.reduce_range
        why += f"; the profile's [int8] reduce_range = {str(spec.reduce_range).lower()}"
    return weight_type, reduce_range, why


@register_format
class Onnx(Format):
    NAME = NAME
    SUFFIX = ".onnx"
    RUNTIME = "onnxruntime"
    RUNTIME_MODULE = "onnxruntime"
    PRECISION = "int8"  # weights and activations, as the cost model counts bytes
    MIXED_PRECISION = True  # nodes can stay float inside a QDQ model
    READS_INT8_SPEC = True
    # int16x8: INT8 weights, int16 activations (onnxruntime's QDQ with QInt16 activations, ONNX
    # opset 21), calibrated like INT8; built only when a target lists it: onnxruntime's CPU
    # has no int16 kernels (it dequantizes), the QNN and other NPU providers run it.
    ENCODINGS = {"fp32": "float", "fp16": "fp16", "int8": "int8", "dynamic": "dynamic", "int16x8": "int16x8"}
    ON_REQUEST = ("int16x8",)
    RUNTIME_OPTIONS = {"execution_provider": ("cpu", None)}  # cpu, nnapi, xnnpack, coreml or a provider name
    TOOLS = {"onnx": "onnx", "onnxruntime": "onnxruntime"}
    EXTRA = "onnx"
    PRECHECK_ORDER = 0
    ADB_TOOL = "/data/local/tmp/onnxruntime_perf_test"
    IO_MODES = ("float", "uint8")

    def interface(self, io: str, preprocessing: dict) -> dict:
        if io == "float":
            return super().interface(io, preprocessing)
        size = preprocessing["image_size"]
        return {"input": {"layout": "NHWC", "shape": [1, size, size, 3], "dtype": "uint8",
                          "values": "RGB pixels 0..255 (normalization inside the model)"},
                "output": "float32 logits, one per label"}

    def _exportable(self, model, example, calibration: np.ndarray, metadata: dict[str, str]):
        """The model, example and calibration inputs for the interface `metadata` asks for."""
        model, example = model.cpu().eval(), example.cpu()
        if self.io_of(metadata) != "uint8":
            return model, example, calibration.astype(np.float32), ""
        import torch

        pre = json.loads(metadata["preprocessing"])
        pixels = to_pixels(calibration, pre["mean"], pre["std"])
        return (_raw_pixels_model(model, pre["mean"], pre["std"]), torch.from_numpy(pixels[:1]), pixels, "model.")

    def for_profile(self, options: Int8Options, profile) -> tuple[Int8Options, dict]:
        weight_type, reduce_range, why = int8_types(profile)
        return (dataclasses.replace(options, weight_type=weight_type, reduce_range=reduce_range),
                {"weight_type": weight_type, "reduce_range": reduce_range, "weights_why": why})

    def export_int8(self, model, example, calibration: np.ndarray, path: Path, metadata: dict[str, str],
                    options: Int8Options = Int8Options(), activations: str = "uint8") -> dict:
        """Write an INT8 QDQ ONNX model (uint8 activations, or int16 with `activations =
        "int16"`, calibrated by `options.calibrator`; weights of `options.weight_type`, 7-bit
        with `options.reduce_range`), with the nodes of `options.float_layers` left in float.
        Returns what was applied."""
        import onnx
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        qat_problem = _qat_graph_problem(options) or (
            "the artifact takes uint8 pixels: calibrated afresh" if self.io_of(metadata) == "uint8" else None)
        if activations == "uint8" and qat_problem is None:
            return self._export_qat(model, example, path, metadata, options)
        model, example, inputs, prefix = self._exportable(model, example, calibration, metadata)
        if activations == "int16":  # signed INT8 weights, as TFLite's 16x8 (uint8 weights serve x86's u8u8 INT8 kernels only)
            options = dataclasses.replace(options, weight_type="int8", reduce_range=False)
        float_layers = tuple(prefix + layer for layer in options.float_layers)
        with tempfile.TemporaryDirectory() as tmp:
            fp32, pre = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx"
            export_float(model, example, fp32)
            quant_pre_process(str(fp32), str(pre))
            excluded = [n.name for n in onnx.load(str(pre)).graph.node
                        if float_layers and in_layers(module_of(n.name), float_layers)]
            if activations == "int16":  # 16-bit QuantizeLinear needs opset 21; the quantizer would upgrade it, warning
                import onnx.version_converter

                onnx.save(onnx.version_converter.convert_version(onnx.load(str(pre)), 21), str(pre))
            quantize_static(
                str(pre), str(path), _Reader(inputs), quant_format=QuantFormat.QDQ,
                per_channel=options.per_channel,
                activation_type=QuantType.QInt16 if activations == "int16" else QuantType.QUInt8,
                weight_type=QuantType.QInt8 if options.weight_type == "int8" else QuantType.QUInt8,
                reduce_range=options.reduce_range,
                calibrate_method=getattr(CalibrationMethod, _CALIBRATE_METHOD[options.calibrator]),
                nodes_to_exclude=excluded,
            )
        self.write_metadata(path, metadata)
        return {"calibrator": options.calibrator, "per_channel": options.per_channel,
                "weights": ("S16" if activations == "int16" else "U8") + ("S8" if options.weight_type == "int8" else "U8")
                           + (", reduce_range (7-bit weights)" if options.reduce_range else ""),
                "float_layers": list(options.float_layers), "float_nodes": len(excluded),
                "calibration_images": len(calibration),
                **({"activations": "int16, calibrated"} if activations == "int16" else {}),
                **({"qat_ranges": f"not used: {qat_problem}"} if options.qat_state is not None else {})}

    def _export_qat(self, model, example, path: Path, metadata: dict[str, str], options: Int8Options) -> dict:
        """The graph QAT ended with (its tuned weights as INT8 constants, its learned
        activation ranges) exported as a QDQ model: the ranges QAT trained for, where
        quantize_static would calibrate new ones on the QAT-tuned weights."""
        import importlib

        import torch

        scheme = importlib.import_module(options.qat_scheme)
        example = example.cpu()
        graph = scheme.restore_qat(model.cpu().eval(), example, options, fold_weights=True)
        try:
            program = torch.onnx.export(graph, (example,), dynamo=True, opset_version=18, input_names=[INPUT],
                                        output_names=[OUTPUT], dynamic_shapes=({0: torch.export.Dim("batch")},),
                                        verbose=False)
            program.save(str(path), external_data=False)  # one file: an artifact needs no .data beside it
        except Exception as e:  # the exporter raises many types; the message names the op
            raise ConversionError(NAME, str(e).splitlines()[0] if str(e) else type(e).__name__) from e
        _for_onnxruntime(path)
        self.write_metadata(path, metadata)
        return {"calibrator": "QAT (ranges tracked by its fake-quantize observers in training)",
                "per_channel": options.per_channel, "weights": "U8S8 (QAT's graph)", "float_layers": [],
                "float_nodes": 0, "calibration_images": 0}

    def export(self, model, example, calibration: np.ndarray, path: Path, metadata: dict[str, str],
               encoding: str = "int8", options: Int8Options = Int8Options()) -> dict:
        """Write the model in `encoding` (see ENCODINGS); returns what was applied.
        fp16 keeps float32 inputs and outputs; dynamic stores INT8 weights and quantizes
        activations at run time (no calibration)."""
        if encoding in ("int8", "int16x8"):
            return self.export_int8(model, example, calibration, path, metadata, options,
                                    activations="int16" if encoding == "int16x8" else "uint8")
        import onnx

        model, example, _, _ = self._exportable(model, example, calibration, metadata)
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = Path(tmp) / "fp32.onnx"
            export_float(model, example, fp32)
            if encoding == "fp32":
                fp32.replace(path)
            elif encoding == "fp16":
                from onnxruntime.transformers.float16 import convert_float_to_float16

                onnx.save(convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True), str(path))
            elif encoding == "dynamic":
                from onnxruntime.quantization import QuantType, quantize_dynamic
                from onnxruntime.quantization.shape_inference import quant_pre_process

                pre = Path(tmp) / "pre.onnx"
                quant_pre_process(str(fp32), str(pre))
                quantize_dynamic(str(pre), str(path), per_channel=options.per_channel, weight_type=QuantType.QUInt8)
            else:
                raise ValueError(f"unknown ONNX encoding {encoding!r}; known: {', '.join(self.ENCODINGS)}")
        self.write_metadata(path, metadata)
        return {"per_channel": options.per_channel, "activations": "quantized at run time"} if encoding == "dynamic" else {}

    def write_metadata(self, path: Path, metadata: dict[str, str]) -> None:
        """Store string key/values in the model's metadata_props (read by any ONNX runtime),
        and fill the standard fields: producer, doc string; for raw-pixel input the Windows ML
        image keys (Image.BitmapPixelFormat, Image.ColorSpaceGamma, Image.NominalPixelRange)."""
        import onnx

        proto = onnx.load(str(path))
        props = dict(metadata)
        if metadata.get("edgekiln_io") == "uint8":
            props.update({"Image.BitmapPixelFormat": "Rgb8", "Image.ColorSpaceGamma": "SRGB",
                          "Image.NominalPixelRange": "NominalRange_0_255"})
        onnx.helper.set_model_props(proto, props)
        proto.producer_name = "edgekiln"
        proto.producer_version = metadata.get("edgekiln_version", "")
        proto.doc_string = metadata.get("description", "")
        onnx.save(proto, str(path))

    def read_metadata(self, path: Path) -> dict[str, str]:
        import onnx

        return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}

    def open_session(self, path, threads: int = 1, execution_provider: str = "cpu", interleaved: bool = False,
                     **_) -> OnnxSession:
        return OnnxSession(str(path), threads, execution_provider, spinning=not interleaved)

    def predict(self, path: Path, images: np.ndarray, threads: int = 1, batch_size: int = 64) -> np.ndarray:
        """Logits for preprocessed float32 NCHW `images`, computed by onnxruntime in batches
        (fed as raw pixels to a model that takes them)."""
        opened = OnnxSession(str(path), threads)
        outs = [opened.run_batch(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
        return np.concatenate(outs)

    def adb_command(self, profile, remote_artifact: str) -> list[str]:
        # -I: random input bound by the tool; -m times -r N: exactly N timed runs.
        rt, runner = profile.runtime, profile.runner
        return [self.adb_tool(profile), "-m", "times", "-r", str(runner.runs), "-x", str(rt.threads),
                "-e", profile.runtime_option("execution_provider"), "-I", remote_artifact]

    def parse_adb_output(self, text: str, profile=None) -> tuple[dict, float | None, list[str]]:
        return parse_perf_test(text)
