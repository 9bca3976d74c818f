"""INT8 in torch through PT2E (torch.export + torchao), with litert-torch's quantizer: the
scheme of the TFLite artifact (per-channel symmetric INT8 weights, per-tensor asymmetric INT8
activations). Used to build TFLite artifacts, to simulate them at any batch size, for QAT,
and to rank layers by their sensitivity to quantization."""

from __future__ import annotations

import copy
import functools

import numpy as np
import torch

from edgekiln.targets.errors import ConversionError
from edgekiln.targets.int8 import Int8Options, in_layers

CALIBRATION_BATCH = 64

SCHEME = "int8: static per-tensor activations, symmetric weights"  # as litert-torch writes it


def module_path(node) -> str | None:
    """The fully qualified name of the innermost module an exported graph node came from."""
    stack = node.meta.get("nn_module_stack")
    return list(stack.values())[-1][0] if stack else None


@functools.cache
def _filtered_quantizer_class():
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer

    class FilteredQuantizer(PT2EQuantizer):
        """litert-torch's quantizer, restricted by module: nodes of `keep_float` layers, or of
        every layer outside `only`, lose their annotation and stay float. (Its own
        set_module_name cannot exclude a module, and matches names torch.export no longer
        writes.)"""

        def __init__(self, keep_float: tuple[str, ...] = (), only: tuple[str, ...] | None = None):
            super().__init__()
            self.keep_float, self.only = tuple(keep_float), only

        def annotate(self, model):
            model = super().annotate(model)
            if not self.keep_float and self.only is None:
                return model
            for node in model.graph.nodes:
                path = module_path(node)
                if path is None:
                    continue
                if in_layers(path, self.keep_float) or (self.only is not None and not in_layers(path, self.only)):
                    node.meta.pop(_ANNOTATION, None)
            _drop_orphan_activations(model.graph)
            return model

    return FilteredQuantizer


_ANNOTATION = "quantization_annotation"
_WEIGHTED_OPS = ("conv", "linear", "addmm", "matmul")


def _drop_orphan_activations(graph) -> None:
    """Unquantize the activations (relu, pooling, adds...) that only float nodes read: between
    two layers kept in float, a quantize-dequantize pair would only lose precision."""
    changed = True
    while changed:
        changed = False
        for node in reversed(graph.nodes):
            if _ANNOTATION not in node.meta or any(op in str(node.target) for op in _WEIGHTED_OPS):
                continue
            if node.users and all(_ANNOTATION not in user.meta for user in node.users):
                node.meta.pop(_ANNOTATION)
                changed = True


def quantizer(options: Int8Options = Int8Options(), *, qat: bool = False, only: tuple[str, ...] | None = None):
    """The PT2E quantizer for `options` (QAT: fake-quantize modules for training instead;
    also what a graph restored from QAT state was quantized with)."""
    import dataclasses

    from litert_torch.quantize.pt2e_quantizer import get_symmetric_quantization_config
    from torchao.quantization.pt2e.observer import MinMaxObserver

    config = get_symmetric_quantization_config(is_per_channel=options.per_channel, is_qat=qat)
    if not qat and options.calibrator == "minmax":  # litert-torch's default is a HistogramObserver
        act = dataclasses.replace(config.input_activation,
                                  observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12))
        config = dataclasses.replace(config, input_activation=act, output_activation=act)
    return _filtered_quantizer_class()(options.float_layers, only).set_global(config)


def calibrator_used(options: Int8Options) -> str:
    """What the PT2E activation observer really is for the asked-for calibrator: torchao has
    no entropy or percentile observer, so both map to its histogram observer (the range that
    minimises the L2 quantization error). With QAT state, the ranges QAT's observers tracked."""
    if uses_qat_state(options):
        return "QAT (ranges tracked by its fake-quantize observers in training)"
    return "minmax" if options.calibrator == "minmax" else "histogram (L2 error)"


def uses_qat_state(options: Int8Options, only: tuple[str, ...] | None = None) -> bool:
    """Whether the PT2E scheme restores QAT's ranges: only for the graph QAT trained (every
    layer quantized); a graph with float layers is calibrated afresh."""
    return options.qat_state is not None and not options.float_layers and only is None


def prepare_qat(model: torch.nn.Module, example: torch.Tensor, options: Int8Options):
    """`model` (train mode: BatchNorm stays separate, as QAT needs) exported and prepared for
    QAT with fake-quantize modules. The same model and options give the same graph, whose
    fake-quantize state `qat_state` can then be restored."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    enable_qat_patterns()
    graph = export_dynamic_batch(model.cpu().train(), example[:1].float())
    return prepare_qat_pt2e(graph, quantizer(options, qat=True))


def qat_state(prepared, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors of a QAT-prepared graph that are not `model`'s own: its fake-quantize
    modules' observed ranges, scales and zero points."""
    own = set(model.state_dict())
    return {k: v.detach().clone().contiguous() for k, v in prepared.state_dict().items() if k not in own}


def restore_qat(model: torch.nn.Module, example: torch.Tensor, options: Int8Options,
                fold_weights: bool = False) -> torch.fx.GraphModule:
    """The INT8-simulated graph QAT ended with: `model` (holding the QAT-tuned weights)
    prepared as in QAT, its fake-quantize state loaded from `options.qat_state`, converted.
    `fold_weights`: its weights stored as INT8 constants (for an exporter to keep them INT8),
    else float weights quantized as the graph runs."""
    from safetensors.torch import load_file
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    prepared = prepare_qat(copy.deepcopy(model), example, options)
    state = load_file(options.qat_state)
    wanted = set(qat_state(prepared, model))
    if set(state) != wanted:  # another graph than QAT trained: never quantize with wrong ranges
        raise ConversionError("tflite", f"QAT state {options.qat_state} does not fit the model's QAT graph "
                                        f"({len(set(state) ^ wanted)} tensors differ)")
    prepared.load_state_dict(state, strict=False)
    move_exported_model_to_eval(prepared)
    return convert_pt2e(prepared, fold_quantize=fold_weights)


def export_dynamic_batch(model: torch.nn.Module, example: torch.Tensor, *, name: str = "tflite"):
    """torch.export with a dynamic batch dimension, as a GraphModule."""
    # A batch-1 example would specialise the batch dimension to the constant 1.
    example = example[:1].repeat(2, *([1] * (example.dim() - 1)))
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        return torch.export.export(model, (example,), dynamic_shapes=({0: batch},)).module()
    except Exception as e:
        raise ConversionError(name, f"torch.export failed: {str(e).splitlines()[0]}") from e


def calibrate(prepared, calibration: np.ndarray) -> None:
    """Run the calibration sample through a prepared graph so its observers see it."""
    with torch.no_grad():
        for i in range(0, len(calibration), CALIBRATION_BATCH):
            prepared(torch.from_numpy(calibration[i : i + CALIBRATION_BATCH]).float())


def simulate(model: torch.nn.Module, calibration: np.ndarray, options: Int8Options = Int8Options(),
             only: tuple[str, ...] | None = None, graph=None) -> torch.fx.GraphModule:
    """INT8-simulated copy of `model`, calibrated on `calibration` (preprocessed float32
    NCHW). It runs in torch at any batch size, so it measures the accuracy the TFLite INT8
    artifact should have. `graph`: an already exported `model` to start from (copied).
    With `options.qat_state` (and no float layers), QAT's ranges instead of calibration."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if uses_qat_state(options, only):
        return restore_qat(model, torch.from_numpy(calibration[:1]), options)
    if graph is None:
        graph = export_dynamic_batch(model.cpu().eval(), torch.from_numpy(calibration[:1]).float())
    else:
        graph = copy.deepcopy(graph)
    prepared = prepare_pt2e(graph, quantizer(options, only=only))
    calibrate(prepared, calibration)
    return convert_pt2e(prepared, fold_quantize=False)


def predict(graph, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits of an exported (or simulated) graph for preprocessed float32 NCHW images."""
    with torch.no_grad():
        return torch.cat([graph(torch.from_numpy(images[i : i + batch_size]).float())
                          for i in range(0, len(images), batch_size)]).numpy()


# Conv-bn pattern graphs traced for QAT conversions in this process (enable_qat_patterns).
TRACED_PATTERNS: dict = {}


def enable_qat_patterns() -> None:
    """torchao's QAT pass exports its conv-bn pattern functions with torch.export, which
    since torch 2.14 accepts only nn.Module (it fails with "Expected `mod` to be an instance
    of `torch.nn.Module`, got function"). Wrap such a function in a module first."""
    import litert_torch.quantize.pt2e_quantizer_utils as litert_utils
    import torchao.quantization.pt2e.qat_utils as qat_utils
    import torchao.quantization.pt2e.utils as pt2e_utils

    original = pt2e_utils._get_aten_graph_module_for_pattern
    if getattr(original, "edgekiln_wrapped", False):
        return

    class Pattern(torch.nn.Module):
        def __init__(self, fn):
            super().__init__()
            self.fn = fn

        def forward(self, *args, **kwargs):
            return self.fn(*args, **kwargs)

    def wrapped(pattern, example_inputs, is_cuda=False, **kwargs):
        # Converting a QAT graph traces the same 126 small conv-bn patterns on every call
        # (about 17 s on 2 cores, whatever the model); each is a function of its code, the
        # values it closes over and its inputs' shapes, so it is traced once per process. The
        # caller gets a copy: it never shares a graph with another conversion.
        key = _pattern_key(pattern, example_inputs, is_cuda, kwargs)
        if key is not None and key in TRACED_PATTERNS:
            return copy.deepcopy(TRACED_PATTERNS[key])
        graph = original(pattern if isinstance(pattern, torch.nn.Module) else Pattern(pattern), example_inputs,
                         is_cuda, **kwargs)
        if key is not None:
            TRACED_PATTERNS[key] = copy.deepcopy(graph)
        return graph

    wrapped.edgekiln_wrapped = True
    for module in (pt2e_utils, qat_utils, litert_utils):  # each imported the function by name
        module._get_aten_graph_module_for_pattern = wrapped


def _pattern_key(pattern, example_inputs, is_cuda: bool, kwargs: dict):
    """What a traced pattern function depends on, or None when it cannot be told (another
    module, a value that is not hashable): the function's code (unwrapped from torchao's
    WrapperModule), the values it closes over and its defaults, and the shapes and types of
    its inputs (traced as inputs: their values do not enter the graph)."""
    from torchao.quantization.pt2e.export_utils import WrapperModule

    fn = pattern.fn if type(pattern) is WrapperModule else pattern
    code = getattr(fn, "__code__", None)
    if code is None:
        return None

    def shape_of(x):
        return (tuple(x.shape), x.dtype, x.device.type) if isinstance(x, torch.Tensor) else x

    try:
        closed = tuple(cell.cell_contents for cell in fn.__closure__ or ())
        key = (code, closed, fn.__defaults__, tuple(map(shape_of, example_inputs)), is_cuda,
               tuple(sorted((k, shape_of(v)) for k, v in kwargs.items())))
        hash(key)
    except (TypeError, ValueError):
        return None
    return key


def train_mode(graph, mode: bool) -> None:
    """Switch a prepared (fake-quantized) exported graph between training and eval (exported
    graphs switch through torchao's helpers, not nn.Module.train())."""
    from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train

    (move_exported_model_to_train if mode else move_exported_model_to_eval)(graph)


def convert(prepared) -> torch.fx.GraphModule:
    """A QAT-prepared graph, trained, as its INT8 simulation (scored like `simulate`'s)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    return convert_pt2e(prepared, fold_quantize=False)
