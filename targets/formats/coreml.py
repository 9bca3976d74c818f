"""Core ML artifacts: mlprogram with INT8 (linear symmetric, per-channel) weights, or all
float16, or all float32.

What an app sees (`io`): by default an image classifier, as Vision expects: an RGB
`ImageType` input of the model's size (normalization inside the model: ImageType's scale and
bias where one std serves every channel, a small normalization op where it does not) and
ClassifierConfig outputs, `classLabel` and the `classLabel_probs` dictionary, which
VNCoreMLRequest returns as VNClassificationObservations. "tensor" keeps the multi-array
`input` (NCHW, normalized) and `logits` output.

Core ML predictions run only on macOS. Elsewhere the package is still built and
checked structurally, and its accuracy is measured on a torch-side proxy: the
model with its weights quantized by coremltools' own torch-side quantizer.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from edgekiln.targets.errors import ConversionError
from edgekiln.targets.format import Format, Session, register_format
from edgekiln.targets.int8 import Int8Options

NAME = "coreml"
PRECISION = "w8a16"  # INT8 weights, float16 activations
NOT_CALIBRATED = ("float16 (W8A16): calibrating INT8 activations needs Core ML predictions, "
                  "which run only on macOS")
INPUT, OUTPUT = "input", "logits"  # io = "tensor"
IMAGE, LABEL, PROBABILITIES = "image", "classLabel", "classLabel_probs"  # io = "image"


class CoremlSession(Session):
    """A Core ML model (macOS only) on the compute units asked for."""

    def __init__(self, path: str, compute_units: str = "ALL"):
        import coremltools as ct

        self.model = ct.models.MLModel(path, compute_units=ct.ComputeUnit[compute_units])
        spec = self.model.get_spec()
        self.input_name = spec.description.input[0].name
        self.output_name = spec.description.output[0].name
        self.image = spec.description.input[0].type.WhichOneof("Type") == "imageType"
        if self.image:  # fed as a picture; the probabilities come back keyed by label
            size = spec.description.input[0].type.imageType
            self._shape = (1, 3, int(size.height), int(size.width))
            meta = spec.description.metadata.userDefined
            pre = json.loads(meta["preprocessing"])
            self._labels = json.loads(meta["labels"])
            self._mean = np.array(pre["mean"], dtype=np.float32).reshape(3, 1, 1)
            self._std = np.array(pre["std"], dtype=np.float32).reshape(3, 1, 1)
        else:
            self._shape = tuple(spec.description.input[0].type.multiArrayType.shape)
        self.runtime = "coremltools"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self._shape

    def set_input(self, x: np.ndarray) -> None:
        if self.image:
            from PIL import Image

            pixels = np.clip(np.round((x[0] * self._std + self._mean) * 255.0), 0, 255).astype(np.uint8)
            self._feed = {self.input_name: Image.fromarray(pixels.transpose(1, 2, 0), "RGB")}
        else:
            self._feed = {self.input_name: x.astype(np.float32)}

    def invoke(self) -> None:
        out = self.model.predict(self._feed)
        self._out = ([[out[PROBABILITIES][label] for label in self._labels]] if self.image
                     else out[self.output_name])

    def output(self) -> np.ndarray:
        return np.asarray(self._out, dtype=np.float32)


def _image_classifier(model, preprocessing: dict, labels: list[str], shape: tuple[int, ...]):
    """`model` as a Core ML image classifier: the torch module to convert (normalization where
    ImageType cannot express it, softmax) and ct.convert's interface arguments."""
    import coremltools as ct
    import torch

    mean, std = preprocessing["mean"], preprocessing["std"]
    one_std = max(std) - min(std) < 1e-9
    # ImageType computes scale * pixel + bias (one scale, a bias per channel).
    scale = 1 / (255.0 * std[0]) if one_std else 1 / 255.0
    bias = [-m / std[0] for m in mean] if one_std else [0.0, 0.0, 0.0]

    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.register_buffer("mean", torch.tensor([0.0] * 3 if one_std else mean).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor([1.0] * 3 if one_std else std).view(1, 3, 1, 1))

        def forward(self, x):
            return torch.softmax(self.model((x - self.mean) / self.std), dim=1)

    interface = {"inputs": [ct.ImageType(name=IMAGE, shape=shape, scale=scale, bias=bias,
                                         color_layout=ct.colorlayout.RGB)],
                 "classifier_config": ct.ClassifierConfig(class_labels=[str(label) for label in labels],
                                                          predicted_feature_name=LABEL)}
    return Classifier().eval(), interface


def _check_classifier(spec, input_shape: tuple[int, ...]) -> dict:
    """An image classifier's spec: RGB image input of the model's size, the label and
    probability outputs, and the labels from the package's metadata in its classify op."""
    from coremltools.proto import FeatureTypes_pb2

    inputs = {i.name: i.type.WhichOneof("Type") for i in spec.description.input}
    image = spec.description.input[0].type.imageType
    outputs = {o.name: o.type.WhichOneof("Type") for o in spec.description.output}
    expected_outputs = {LABEL: "stringType", PROBABILITIES: "dictionaryType"}
    if (inputs != {IMAGE: "imageType"} or (image.height, image.width) != tuple(input_shape[2:])
            or image.colorSpace != FeatureTypes_pb2.ImageFeatureType.RGB
            or outputs != expected_outputs or spec.description.predictedFeatureName != LABEL):
        raise ConversionError(NAME, f"package has inputs {inputs} ({image.width}x{image.height}) and outputs "
                                    f"{outputs}, expected an RGB {IMAGE!r} image of {list(input_shape[2:])} "
                                    f"and {expected_outputs}")
    labels = json.loads(spec.description.metadata.userDefined["labels"])
    program = str(spec.mlProgram)
    missing = [label for label in labels if f'"{label}"' not in program]
    if "classify" not in program or missing:
        raise ConversionError(NAME, f"the package's classifier does not carry the labels {missing or labels}")
    return {"inputs": {IMAGE: f"RGB image {image.width}x{image.height}"}, "outputs": list(outputs),
            "predicted_feature": LABEL, "labels": len(labels)}


def _granularity(options: Int8Options) -> str:
    return "per_channel" if options.per_channel else "per_tensor"


def _float16(model):
    """A model computing in float16 with float32 inputs and outputs, as an fp16 mlprogram does."""
    import torch

    class Float16(torch.nn.Module):
        def __init__(self, model: torch.nn.Module):
            super().__init__()
            self.model = model.half()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model(x.half()).float()

    return Float16(model)


@register_format
class Coreml(Format):
    NAME = NAME
    SUFFIX = ".mlpackage"
    RUNTIME = "coremltools"
    RUNTIME_MODULE = "coremltools"
    PRECISION = PRECISION
    MIXED_PRECISION = False  # weight-only INT8 everywhere; edgekiln keeps no layer float here
    # No dynamic-range INT8: Core ML has none.
    ENCODINGS = {"fp32": "float", "fp16": "fp16", "int8": PRECISION}
    RUNTIME_OPTIONS = {"compute_units": ("ALL", ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE"))}
    TOOLS = {"coremltools": "coremltools"}
    EXTRA = "coreml"
    PRECHECK_ORDER = 10
    IO_MODES = ("image", "tensor")
    BODY_IO = "tensor"

    def interface(self, io: str, preprocessing: dict) -> dict:
        if io == "tensor":
            return super().interface(io, preprocessing)
        size = preprocessing["image_size"]
        return {"input": {"name": IMAGE, "type": f"ImageType, RGB, {size}x{size} (normalization inside the model)"},
                "output": f"ClassifierConfig: {LABEL} (the label) and {PROBABILITIES} (label -> probability), "
                          "VNClassificationObservations in Vision"}

    def runtime_unavailable(self) -> str | None:
        if sys.platform == "darwin":
            return super().runtime_unavailable()
        return f"Core ML predictions need macOS; coremltools cannot run them on {sys.platform}"

    def export(self, model, example, calibration: np.ndarray, path: Path, metadata: dict[str, str],
               encoding: str = "int8", options: Int8Options = Int8Options()) -> dict:
        """Write an .mlpackage in `encoding` (see ENCODINGS); returns what was applied.
        int8: INT8 weights (W8; activations stay float16, as activation calibration needs Core ML
        predictions, i.e. macOS). `calibration` is unused here, and so is `options.calibrator`."""
        if encoding not in self.ENCODINGS:
            raise ValueError(f"Core ML has no {encoding!r} encoding; known: {', '.join(self.ENCODINGS)}")
        if encoding == "int8" and options.float_layers:
            raise ValueError("Core ML artifacts do not keep layers in float (no mixed precision)")
        import coremltools as ct
        import coremltools.optimize as cto
        import torch

        # contiguous: torch.export records a strided example's dim order, which Core ML refuses
        model, example = model.cpu().eval(), example.cpu().contiguous()
        io = self.io_of(metadata)
        if io == "image":
            model, interface = _image_classifier(model, json.loads(metadata["preprocessing"]),
                                                 json.loads(metadata["labels"]), tuple(example.shape))
        else:
            interface = {"inputs": [ct.TensorType(name=INPUT, shape=tuple(example.shape))],
                         "outputs": [ct.TensorType(name=OUTPUT)]}
        try:
            # torch.export, not jit.trace: traced shape arithmetic (MobileViT's unfold) becomes
            # `int` ops that coremltools 9.0 cannot convert under numpy >= 2.4
            # (apple/coremltools#2633, #2755); export specialises the shapes instead.
            exported = torch.export.export(model, (example,)).run_decompositions({})
            mlmodel = ct.convert(
                exported, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS16,
                compute_precision=ct.precision.FLOAT32 if encoding == "fp32" else ct.precision.FLOAT16,
                **interface)
            if encoding == "int8":
                config = cto.coreml.OptimizationConfig(
                    global_config=cto.coreml.OpLinearQuantizerConfig(
                    mode="linear_symmetric", dtype="int8", granularity=_granularity(options)))
                mlmodel = cto.coreml.linear_quantize_weights(mlmodel, config)
        except Exception as e:
            raise ConversionError(NAME, str(e).splitlines()[0] if str(e) else type(e).__name__) from e
        mlmodel.short_description = metadata.get("description", "")
        mlmodel.version = metadata.get("edgekiln_version", "")
        mlmodel.author = "edgekiln"
        for key, value in {**metadata, "edgekiln_io": io}.items():
            mlmodel.user_defined_metadata[key] = value
        mlmodel.save(str(path))
        self.check(path, tuple(example.shape), encoding)
        if encoding != "int8":
            return {}
        return {"calibrator": None, "per_channel": options.per_channel, "float_layers": [],
                "activations": NOT_CALIBRATED}

    def check(self, path: Path, input_shape: tuple[int, ...], encoding: str | None = None) -> dict:
        """Structural check that runs on any OS: the package loads, input/output names and the
        input shape are as exported, and the weights are stored as INT8 when they should be
        (`encoding` int8; unset: when the package's edgekiln_precision metadata says so, or it
        has none). Returns what it found."""
        import coremltools as ct

        spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
        if spec.description.metadata.userDefined.get("edgekiln_io", "tensor") == "image":
            found = _check_classifier(spec, input_shape)
        else:
            inputs = {i.name: tuple(i.type.multiArrayType.shape) for i in spec.description.input}
            outputs = [o.name for o in spec.description.output]
            if inputs != {INPUT: input_shape} or outputs != [OUTPUT]:
                raise ConversionError(NAME, f"package has inputs {inputs} and outputs {outputs}, "
                                            f"expected {{'{INPUT}': {input_shape}}} and ['{OUTPUT}']")
            found = {"inputs": {k: list(v) for k, v in inputs.items()}, "outputs": outputs}
        if encoding is None:
            int8_weights = spec.description.metadata.userDefined.get("edgekiln_precision", PRECISION) == PRECISION
        else:
            int8_weights = encoding == "int8"
        program = str(spec.mlProgram)
        int8_ops = program.count("constexpr_affine_dequantize") + program.count("constexpr_blockwise_shift_scale")
        if int8_weights and int8_ops == 0:
            raise ConversionError(NAME, "no INT8 weight ops in the saved package")
        return {**found, "int8_weight_ops": int8_ops}

    def read_metadata(self, path: Path) -> dict[str, str]:
        import coremltools as ct

        spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
        return dict(spec.description.metadata.userDefined)

    def write_metadata(self, path: Path, metadata: dict[str, str]) -> None:
        import coremltools as ct

        mlmodel = ct.models.MLModel(str(path), skip_model_load=True)
        for key, value in metadata.items():
            mlmodel.user_defined_metadata[key] = value
        mlmodel.save(str(path))

    def proxy_model(self, model, options: Int8Options = Int8Options(), encoding: str = "int8"):
        """Torch-side stand-in for the artifact. int8: weights quantized INT8 (per channel unless
        options say per tensor), symmetric, by coremltools.optimize.torch (what
        linear_quantize_weights does to the mlprogram); fp16: the model computing in float16."""
        import copy

        model = copy.deepcopy(model).cpu().eval()
        if encoding == "fp32":
            return model
        if encoding == "fp16":
            return _float16(model)
        from coremltools.optimize.torch.quantization import PostTrainingQuantizer, PostTrainingQuantizerConfig

        config = PostTrainingQuantizerConfig.from_dict({"global_config": {
            "weight_dtype": "int8", "granularity": _granularity(options), "quantization_scheme": "symmetric"}})
        return PostTrainingQuantizer(model, config).compress()

    def open_session(self, path, threads: int = 1, compute_units: str = "ALL", **_) -> CoremlSession:
        return CoremlSession(str(path), compute_units)

    def load(self, path: Path) -> None:
        """Structural load (any OS): predictions need macOS, see `predict`."""
        import coremltools as ct

        ct.models.MLModel(str(path), skip_model_load=True)
