"""Editing a converted .tflite flatbuffer: the input and output an app expects around the
converted body, edgekiln's metadata buffers, and the standard LiteRT (TFLite) Model Metadata
that MediaPipe Tasks, the LiteRT Task Library and Android Studio's model binding read.

litert-torch converts the model as edgekiln trained it: NCHW, normalized input, logits out,
INT8 at both ends for an INT8 model. `adapt_io` wraps that body in operators, so the file an
app loads takes what a camera frame is:

- "float": NHWC float32 pixels scaled to [-1, 1], (pixel - 127.5) / 127.5, as the metadata's
  NormalizationOptions say (MediaPipe applies one mean and std to every channel, so the
  model's own per-channel normalization is done inside it), float32 probabilities out;
- "uint8": NHWC uint8 RGB pixels, the whole normalization inside the model, probabilities out;
- "int8": the body's own NCHW INT8 input and INT8 logits (nothing added).

Associated files (the labels) follow the standard layout: the model file is also a zip
archive holding them, named in the metadata.
"""

from __future__ import annotations

import io as _io
import json
import zipfile
from pathlib import Path

import numpy as np

IO_MODES = ("float", "uint8", "int8")
METADATA_NAME = "TFLITE_METADATA"  # the buffer name readers look for
LABELS_FILE = "labels.txt"
# Readers refuse metadata that asks for a newer parser than theirs: 1.0.0 reads everything
# written here (image properties, normalization, an axis-labels file).
MIN_PARSER_VERSION = "1.0.0"


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


class _Editor:
    """Appends tensors, buffers and operators to subgraph 0 of a ModelT."""

    def __init__(self, model):
        self.schema = _schema()
        self.model = model
        self.graph = model.subgraphs[0]

    def opcode(self, builtin: int, version: int = 1) -> int:
        for i, code in enumerate(self.model.operatorCodes):
            if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
                code.version = max(code.version, version)
                return i
        code = self.schema.OperatorCodeT()
        code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), version
        self.model.operatorCodes.append(code)
        return len(self.model.operatorCodes) - 1

    def constant(self, name: str, values: np.ndarray, tensor_type: int) -> int:
        buffer = self.schema.BufferT()
        buffer.data = np.frombuffer(values.tobytes(), dtype=np.uint8)
        self.model.buffers.append(buffer)
        return self.tensor(name, list(values.shape), tensor_type, buffer=len(self.model.buffers) - 1)

    def tensor(self, name: str, shape: list[int], tensor_type: int, buffer: int = 0, quantization=None) -> int:
        tensor = self.schema.TensorT()
        tensor.name, tensor.shape, tensor.type, tensor.buffer = name, list(shape), tensor_type, buffer
        tensor.quantization = quantization
        self.graph.tensors.append(tensor)
        return len(self.graph.tensors) - 1

    def operator(self, builtin: int, inputs: list[int], outputs: list[int], options_type: int = 0,
                 options=None, version: int = 1):
        op = self.schema.OperatorT()
        op.opcodeIndex = self.opcode(builtin, version)
        op.inputs, op.outputs = inputs, outputs
        op.builtinOptionsType, op.builtinOptions = options_type, options
        return op


def _leading_transpose(model, tensor: int):
    """The TRANSPOSE to NHWC (perm 0, 2, 3, 1) that is the only reader of `tensor`, if any."""
    schema = _schema()
    graph = model.subgraphs[0]
    readers = [op for op in graph.operators if tensor in list(op.inputs)]
    if len(readers) != 1:
        return None
    op = readers[0]
    code = model.operatorCodes[op.opcodeIndex]
    if max(code.builtinCode, code.deprecatedBuiltinCode) != schema.BuiltinOperator.TRANSPOSE:
        return None
    perm_tensor = graph.tensors[op.inputs[1]]
    data = model.buffers[perm_tensor.buffer].data if perm_tensor.buffer else None
    if data is None or np.frombuffer(bytes(np.asarray(data, dtype=np.uint8)), dtype=np.int32).tolist() != [0, 2, 3, 1]:
        return None
    return op


def _signature_retarget(model, old: int, new: int, outputs: bool) -> None:
    for signature in model.signatureDefs or []:
        for entry in (signature.outputs if outputs else signature.inputs) or []:
            if entry.tensorIndex == old:
                entry.tensorIndex = new


def adapt_io(path: Path, io: str, mean: list[float], std: list[float]) -> None:
    """Rewrite the .tflite at `path` so it takes `io` input (see the module docstring) and
    gives float32 probabilities; "int8" leaves it as converted."""
    if io not in IO_MODES:
        raise ValueError(f"unknown TFLite io {io!r}; known: {', '.join(IO_MODES)}")
    if io == "int8":
        return
    import flatbuffers

    schema = _schema()
    Op, T, Opts = schema.BuiltinOperator, schema.TensorType, schema.BuiltinOptions
    model = schema.ModelT.InitFromPackedBuf(bytearray(path.read_bytes()), 0)
    edit = _Editor(model)
    graph = edit.graph
    body_in, body_out = graph.inputs[0], graph.outputs[0]
    n, c, h, w = (int(d) for d in graph.tensors[body_in].shape)
    first: list = []
    # NHWC pixels -> the body's normalized NCHW input: the model's normalization, per channel
    # (the last axis), as x * scale + shift of what the app feeds.
    if io == "uint8":  # x = pixel: (pixel / 255 - mean) / std
        app_input = edit.tensor("image", [n, h, w, c], T.UINT8)
        as_float = edit.tensor("image_float", [n, h, w, c], T.FLOAT32)
        cast = schema.CastOptionsT()
        cast.inDataType, cast.outDataType = T.UINT8, T.FLOAT32
        first.append(edit.operator(Op.CAST, [app_input], [as_float], Opts.CastOptions, cast))
        scale = np.array([1 / (255.0 * s) for s in std], dtype=np.float32)
        shift = np.array([-m / s for m, s in zip(mean, std)], dtype=np.float32)
    else:  # x = (pixel - 127.5) / 127.5: pixel / 255 = (x + 1) / 2
        app_input = as_float = edit.tensor("image", [n, h, w, c], T.FLOAT32)
        scale = np.array([0.5 / s for s in std], dtype=np.float32)
        shift = np.array([(0.5 - m) / s for m, s in zip(mean, std)], dtype=np.float32)
    scaled = edit.tensor("image_scaled", [n, h, w, c], T.FLOAT32)
    normalized = edit.tensor("image_normalized", [n, h, w, c], T.FLOAT32)
    first.append(edit.operator(Op.MUL, [as_float, edit.constant("scale", scale, T.FLOAT32)], [scaled],
                               Opts.MulOptions, schema.MulOptionsT()))
    first.append(edit.operator(Op.ADD, [scaled, edit.constant("shift", shift, T.FLOAT32)], [normalized],
                               Opts.AddOptions, schema.AddOptionsT()))
    body_type = graph.tensors[body_in].type
    # The converted body starts by transposing its NCHW input to NHWC (TFLite's layout): feed
    # that transpose's output directly and drop it, instead of transposing back and forth.
    entry = _leading_transpose(model, body_in)
    if entry is not None:
        graph.operators = [op for op in graph.operators if op is not entry]
        target, target_shape = entry.outputs[0], [n, h, w, c]
    else:
        target, target_shape = body_in, [n, c, h, w]
    if body_type != T.FLOAT32:  # an INT8 body: quantize with its own input scale
        quantized = edit.tensor("image_int8", [n, h, w, c], body_type, quantization=graph.tensors[body_in].quantization)
        first.append(edit.operator(Op.QUANTIZE, [normalized], [quantized], Opts.QuantizeOptions,
                                   schema.QuantizeOptionsT(), version=2))
        normalized = quantized
    if entry is None:
        perm = edit.constant("nhwc_to_nchw", np.array([0, 3, 1, 2], dtype=np.int32), T.INT32)
        first.append(edit.operator(Op.TRANSPOSE, [normalized, perm], [target], Opts.TransposeOptions,
                                   schema.TransposeOptionsT(), version=2 if body_type != T.FLOAT32 else 1))
    else:  # the last adapter op writes the body's NHWC tensor itself
        first[-1].outputs = [target]
        assert list(graph.tensors[target].shape) == target_shape
    # The body's logits -> float32 probabilities.
    last: list = []
    logits = body_out
    if graph.tensors[body_out].type != T.FLOAT32:
        logits = edit.tensor("logits_float", list(graph.tensors[body_out].shape), T.FLOAT32)
        last.append(edit.operator(Op.DEQUANTIZE, [body_out], [logits], Opts.DequantizeOptions,
                                  schema.DequantizeOptionsT(), version=2))
    probabilities = edit.tensor("probabilities", list(graph.tensors[body_out].shape), T.FLOAT32)
    softmax = schema.SoftmaxOptionsT()
    softmax.beta = 1.0
    last.append(edit.operator(Op.SOFTMAX, [logits], [probabilities], Opts.SoftmaxOptions, softmax))
    graph.operators = first + list(graph.operators) + last
    graph.inputs, graph.outputs = [app_input], [probabilities]
    _signature_retarget(model, body_in, app_input, outputs=False)
    _signature_retarget(model, body_out, probabilities, outputs=True)
    builder = flatbuffers.Builder(path.stat().st_size + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(builder.Output())


# --- the standard Model Metadata (schema tflite/metadata_schema.fbs), written by slot number:
# the Python bindings of that schema ship only with tflite-support (which pins protobuf 3) and
# MediaPipe, neither of which edgekiln depends on.
_RGB = 1  # ColorSpaceType.RGB
_IMAGE_PROPERTIES, _FEATURE_PROPERTIES = 2, 1  # ContentProperties union
_NORMALIZATION_OPTIONS = 1  # ProcessUnitOptions union
_TENSOR_AXIS_LABELS = 2  # AssociatedFileType


def _strings(b, *values: str):
    return [b.CreateString(v) for v in values]


def _vector(b, offsets: list[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        b.PrependUOffsetTRelative(offset)
    return b.EndVector()


def _float_vector(b, values: list[float]) -> int:
    b.StartVector(4, len(values), 4)
    for v in reversed(values):
        b.PrependFloat32(float(v))
    return b.EndVector()


def _table(b, fields: list[tuple[int, str, object]], size: int) -> int:
    """A table with `fields` (slot, kind, value): kind "offset", "int8" or "uint8"."""
    b.StartObject(size)
    for slot, kind, value in fields:
        if value is None:
            continue
        if kind == "offset":
            b.PrependUOffsetTRelativeSlot(slot, value, 0)
        elif kind == "int8":
            b.PrependInt8Slot(slot, value, 0)
        else:
            b.PrependUint8Slot(slot, value, 0)
    return b.EndObject()


FLOAT_MEAN = FLOAT_STD = 127.5  # what a float artifact's input is: (pixel - 127.5) / 127.5


def model_metadata(name: str, description: str, version: str, io: str, image_size: int, num_classes: int) -> bytes:
    """The ModelMetadata flatbuffer of an image classifier: RGB image input of `image_size`,
    its normalization (float input), and a probability output labelled by LABELS_FILE."""
    import flatbuffers

    b = flatbuffers.Builder(1024)
    # input tensor: image properties, and for float input the normalization in pixel units
    in_name, in_desc = _strings(b, "image", f"RGB image, {image_size}x{image_size}, NHWC, "
                                            + ("uint8 pixels" if io == "uint8" else "float32 (pixel - 127.5) / 127.5"))
    image_props = _table(b, [(0, "int8", _RGB)], 2)
    in_content = _table(b, [(0, "uint8", _IMAGE_PROPERTIES), (1, "offset", image_props)], 3)
    units = []
    if io == "float":
        mean_v = _float_vector(b, [FLOAT_MEAN])
        std_v = _float_vector(b, [FLOAT_STD])
        normalization = _table(b, [(0, "offset", mean_v), (1, "offset", std_v)], 2)
        units.append(_table(b, [(0, "uint8", _NORMALIZATION_OPTIONS), (1, "offset", normalization)], 2))
    in_units = _vector(b, units) if units else None
    in_tensor = _table(b, [(0, "offset", in_name), (1, "offset", in_desc), (3, "offset", in_content),
                           (4, "offset", in_units)], 7)
    # output tensor: probabilities over the labels file's classes, one per line
    out_name, out_desc, labels_name, labels_desc = _strings(
        b, "probability", f"probabilities of the {num_classes} classes", LABELS_FILE, "class labels, one per line")
    feature = _table(b, [], 0)
    out_content = _table(b, [(0, "uint8", _FEATURE_PROPERTIES), (1, "offset", feature)], 3)
    labels = _table(b, [(0, "offset", labels_name), (1, "offset", labels_desc), (2, "int8", _TENSOR_AXIS_LABELS)], 5)
    out_files = _vector(b, [labels])
    out_tensor = _table(b, [(0, "offset", out_name), (1, "offset", out_desc), (3, "offset", out_content),
                            (6, "offset", out_files)], 7)
    inputs, outputs = _vector(b, [in_tensor]), _vector(b, [out_tensor])
    graph_name, = _strings(b, "image_classifier")
    subgraph = _table(b, [(0, "offset", graph_name), (2, "offset", inputs), (3, "offset", outputs)], 10)
    model_name, model_desc, model_version, author, parser = _strings(
        b, name, description, version, "edgekiln", MIN_PARSER_VERSION)
    subgraphs = _vector(b, [subgraph])
    root = _table(b, [(0, "offset", model_name), (1, "offset", model_desc), (2, "offset", model_version),
                      (3, "offset", subgraphs), (4, "offset", author), (7, "offset", parser)], 8)
    b.Finish(root, file_identifier=b"M001")
    return bytes(b.Output())


def append_associated_files(path: Path, files: dict[str, str]) -> None:
    """Append `files` (name -> text) to the model as a zip archive (stored, not compressed),
    where metadata readers look for associated files. Nothing to append: the file is left as is."""
    if not files:
        return
    archive = _io.BytesIO()
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as z:
        for name, text in files.items():
            z.writestr(name, text)
    with path.open("ab") as f:
        f.write(archive.getvalue())


def associated_files(path: Path) -> dict[str, str]:
    """The associated files packed in a model (empty when there are none)."""
    try:
        with zipfile.ZipFile(path) as z:
            return {name: z.read(name).decode() for name in z.namelist()}
    except zipfile.BadZipFile:
        return {}


def labels_text(labels: list[str]) -> str:
    return "".join(f"{label}\n" for label in labels)


def preprocessing_of(metadata: dict[str, str]) -> dict | None:
    """edgekiln's preprocessing record from a model's metadata buffers, if it has one."""
    return json.loads(metadata["preprocessing"]) if "preprocessing" in metadata else None


def inline_buffers(data: bytes) -> bytes:
    """`data` (a .tflite) with every buffer that ai-edge-quantizer stored past the flatbuffer
    (offset and size) moved back inside it, so the model can be edited and repacked here
    (its interface wrapped, metadata added). Models under the flatbuffer's 2 GB only."""
    import flatbuffers

    schema = _schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    moved = False
    for buffer in model.buffers or []:
        if (buffer.offset or 0) > 1:
            buffer.data = np.frombuffer(data[buffer.offset:buffer.offset + buffer.size], dtype=np.uint8)
            buffer.offset, buffer.size = 0, 0
            moved = True
    if not moved:
        return data
    builder = flatbuffers.Builder(len(data) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())

