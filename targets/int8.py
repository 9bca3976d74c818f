"""What an INT8 export is asked for, common to every format: the activation calibrator,
per-channel or per-tensor weights, and the layers to keep in float (mixed precision)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

CALIBRATORS = ("minmax", "entropy", "percentile")
WEIGHT_TYPES = ("uint8", "int8")
# How the layers kept from plain INT8 are kept: in float, or with int16 activations and INT8
# weights (integer-only, for accelerators that run no float op; formats with INT16_LAYERS).
SENSITIVE_AS = ("float", "int16")


@dataclass(frozen=True)
class Int8Options:
    calibrator: str = "minmax"  # how activation ranges are chosen from the calibration sample
    per_channel: bool = True  # one weight scale per output channel (else one per tensor)
    float_layers: tuple[str, ...] = field(default_factory=tuple)  # torch module names kept float
    sensitive_as: str = "float"  # what `float_layers` become in a format that can give them int16 activations
    # QAT's fake-quantize state (safetensors file): the PT2E scheme (TFLite) takes its
    # activation ranges from it instead of calibrating, when no layer is kept in float, and
    # so does ONNX, through the graph `qat_scheme` (the INT8 simulation module QAT trained
    # under) restores.
    qat_state: str | None = None
    qat_scheme: str | None = None
    # How the weights are stored, for the kernels of the device that runs them: ONNX's
    # weight type (uint8 or int8; activations are uint8) and reduce_range (7-bit weights, so
    # x86 kernels without VNNI do not saturate). Set per target from its profile's [int8].
    weight_type: str = "uint8"
    reduce_range: bool = False

    def __post_init__(self):
        if self.calibrator not in CALIBRATORS:
            raise ValueError(f"unknown calibrator {self.calibrator!r}; known: {', '.join(CALIBRATORS)}")
        if self.sensitive_as not in SENSITIVE_AS:
            raise ValueError(f"unknown sensitive_as {self.sensitive_as!r}; known: {', '.join(SENSITIVE_AS)}")
        if self.weight_type not in WEIGHT_TYPES:
            raise ValueError(f"unknown weight type {self.weight_type!r}; known: {', '.join(WEIGHT_TYPES)}")


def quantizable_layers(model) -> list[str]:
    """Names of the modules an INT8 export quantizes and mixed precision may keep in float:
    every convolution and linear layer, in definition order."""
    import torch

    return [name for name, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]


def in_layers(module_path: str, layers: tuple[str, ...] | set[str]) -> bool:
    """Whether a module path lies in (or is) one of `layers`."""
    return any(module_path == layer or module_path.startswith(layer + ".") for layer in layers)


class Int8Simulation(Protocol):
    """A format's INT8 scheme simulated in torch (a module: `Format.INT8_SIMULATION`), so a
    stage can score INT8 accuracy, fine-tune for it (QAT) and rank the layers to keep in float
    before any artifact exists. TFLite's is targets/formats/tflite/pt2e.py."""

    SCHEME: str  # what the scheme quantizes, in words (the manifest's quantize.scheme)

    def export_dynamic_batch(self, model, example): ...  # the graph the functions below take
    def simulate(self, model, calibration, options: Int8Options, *, only=None, graph=None): ...
    def predict(self, graph, images): ...  # float32 logits of the simulated graph
    def calibrator_used(self, options: Int8Options) -> str: ...
    def prepare_qat(self, model, example, options: Int8Options): ...
    def qat_state(self, prepared, model) -> dict: ...
    def train_mode(self, graph, mode: bool) -> None: ...  # a prepared graph to training or eval
    def convert(self, prepared): ...  # a trained QAT graph as its INT8 simulation
    # the graph QAT ended with, from the model and options.qat_state (fold_weights: INT8 weight constants)
    def restore_qat(self, model, example, options: Int8Options, fold_weights: bool = False): ...
