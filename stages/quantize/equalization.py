"""Cross-layer equalization, a rung of the INT8 repair ladder.

Two convolutions in a row with only a batch norm and a positive-homogeneous activation
(ReLU, leaky ReLU, none) between them compute the same function when output channel c of
the first is divided by s_c and input channel c of the second multiplied by s_c (for s_c > 0,
relu(x / s) = relu(x) / s). Choosing s_c = sqrt(r1_c / r2_c), where r1_c is the range of the
first's channel-c weights (batch norm folded in, as converters fold it) and r2_c that of the
second's input-channel-c weights, gives both the same range per channel: a depthwise
convolution's channels, whose ranges differ by orders of magnitude, and the activations
between the two stop wasting INT8 levels on one loud channel (Nagel et al., "Data-Free
Quantization Through Weight Equalization and Bias Correction", ICCV 2019; AIMET's CLE).

AIMET's implementation folds the batch norms into the convolutions (all 14 of resnet10t's),
which the model bundle (timm architecture + state dict) cannot hold, and does not take
timm's fused BatchNormAct2d for a batch norm and an activation (on mobilenetv2_050 it
changes no parameter; BENCHMARKS.md); so this one scales the batch norm's affine parameters
instead of folding them, and the model keeps its architecture.

Pairs are found by tracing one forward pass (which module's output is which module's
input); a pair is kept only if scaling it leaves the model's output unchanged on the
calibration images, so a first convolution whose output also feeds a residual or a
squeeze-excite gate is never equalized. Hard-swish and ReLU6 are not positive-homogeneous:
MobileNetV3's later blocks have no pair.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from edgekiln.stages.quantize.bias_correction import batch_norm_after, folded

ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.Identity)  # f(s x) = s f(x) for s > 0
ROUNDS = 20  # equalizing one pair changes its neighbours' ranges: repeat until settled
SETTLED = 1e-3  # a round whose largest |log s| is below this changes nothing that matters
CHECK_IMAGES = 8


@dataclass
class Pair:
    first: str  # the convolution whose output channels are divided
    norm: str | None  # the batch norm after it (its affine parameters carry the division)
    second: str  # the convolution whose input channels are multiplied


def _norm_activation_ok(module: nn.Module) -> bool:
    """A batch norm that is plain, or timm's BatchNormAct2d with an activation that scales."""
    act = getattr(module, "act", None)
    drop = getattr(module, "drop", None)
    return (act is None or isinstance(act, ACTIVATIONS)) and (drop is None or isinstance(drop, nn.Identity))


def _second_ok(conv: nn.Conv2d) -> bool:
    return conv.groups == 1 or conv.groups == conv.in_channels == conv.out_channels


def candidate_pairs(model: nn.Module, example: torch.Tensor) -> list[Pair]:
    """Every conv -> [batch norm] -> [activation] -> conv chain one forward pass of `example`
    shows, by which module's output tensor is which module's input."""
    calls: list[tuple[str, nn.Module, int, int]] = []
    keep: list[torch.Tensor] = []  # alive for the pass: no id() is reused

    def watch(name):
        def hook(module, inputs, output):
            if inputs and isinstance(inputs[0], torch.Tensor) and isinstance(output, torch.Tensor):
                keep.extend([inputs[0], output])
                calls.append((name, module, id(inputs[0]), id(output)))
        return hook

    handles = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.LeakyReLU)) and not _inside_norm(model, name):
            handles.append(module.register_forward_hook(watch(name)))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    producer: dict[int, list[tuple[str, nn.Module, int]]] = {}
    for name, module, in_id, out_id in calls:
        chain = producer.get(in_id, []) if in_id == out_id else []  # in place: it modifies its input
        producer[out_id] = chain + [(name, module, in_id)]
    pairs = []
    for name, module, in_id, _ in calls:
        if not isinstance(module, nn.Conv2d) or not _second_ok(module):
            continue
        chain, norm = list(producer.get(in_id, [])), None
        while chain:
            up_name, up, up_in = chain.pop()
            if isinstance(up, (nn.ReLU, nn.LeakyReLU)):
                if not chain:
                    chain = list(producer.get(up_in, []))
                continue
            if isinstance(up, nn.BatchNorm2d) and norm is None and up.affine and _norm_activation_ok(up):
                norm = up_name
                chain = list(producer.get(up_in, []))
                continue
            if isinstance(up, nn.Conv2d) and up.out_channels == module.in_channels:
                pairs.append(Pair(up_name, norm, name))
            break
    return pairs


def _inside_norm(model: nn.Module, name: str) -> bool:
    """A module inside timm's BatchNormAct2d (its act, its drop): the norm stands for it."""
    parent = name.rpartition(".")[0]
    return bool(parent) and isinstance(model.get_submodule(parent), nn.BatchNorm2d)


def _output_ranges(conv: nn.Conv2d, norm: nn.BatchNorm2d | None) -> torch.Tensor:
    """max |w| per output channel, the batch norm after it folded in as converters fold it."""
    return folded(conv, norm)[0].abs().flatten(1).amax(1)


def _input_ranges(conv: nn.Conv2d, norm_after: nn.BatchNorm2d | None) -> torch.Tensor:
    """max |w| per input channel, the batch norm after it folded in."""
    w = folded(conv, norm_after)[0].abs()
    if conv.groups == 1:
        return w.transpose(0, 1).flatten(1).amax(1)
    return w.flatten(1).amax(1)  # depthwise: input channel c is output channel c


def rescale(model: nn.Module, pair: Pair, s: torch.Tensor) -> None:
    """Divide `first`'s output channels by s (through its batch norm's affine parameters, or
    its own weight and bias), multiply `second`'s input channels by s."""
    first, second = model.get_submodule(pair.first), model.get_submodule(pair.second)
    s = s.to(second.weight.dtype)
    with torch.no_grad():
        if pair.norm is not None:
            norm = model.get_submodule(pair.norm)
            norm.weight.div_(s)
            norm.bias.div_(s)
        else:
            first.weight.div_(s.view(-1, 1, 1, 1))
            if first.bias is not None:
                first.bias.div_(s)
        if second.groups == 1:
            second.weight.mul_(s.view(1, -1, 1, 1))
        else:
            second.weight.mul_(s.view(-1, 1, 1, 1))


def pairs_of(model: nn.Module, calibration: np.ndarray) -> list[Pair]:
    """The pairs of `model` (in eval mode) that can be rescaled: those the trace finds whose
    rescaling leaves the model's output on the first calibration images unchanged. Checked in
    float64, where a true pair moves the output by ~1e-12 of its scale and a pair whose first
    output also goes elsewhere by about its whole scale (in float32 a model with large
    activations can blur the two)."""
    exact = copy.deepcopy(model).double().eval()
    images = torch.from_numpy(np.ascontiguousarray(calibration[:CHECK_IMAGES])).double()
    with torch.no_grad():
        reference = exact(images)
    pairs = []
    for pair in candidate_pairs(model, images[:1].float()):
        trial = copy.deepcopy(exact)
        rescale(trial, pair, torch.linspace(0.5, 2.0, trial.get_submodule(pair.second).in_channels))
        with torch.no_grad():
            if torch.allclose(trial(images), reference, rtol=1e-6, atol=1e-6 * float(reference.abs().max())):
                pairs.append(pair)
    return pairs


def equalized(model: nn.Module, calibration: np.ndarray) -> tuple[nn.Module, dict]:
    """A copy of `model` with every equalizable pair's channel ranges balanced, and what was
    done: the pairs, the rounds, the largest scale."""
    model = copy.deepcopy(model).cpu().eval()
    pairs = pairs_of(model, calibration)
    norms_of = batch_norm_after(model)  # the second's folded range: its batch norm, paired or not
    largest, rounds = 1.0, 0
    for rounds in range(1, ROUNDS + 1):
        moved = 0.0
        for pair in pairs:
            first, second = model.get_submodule(pair.first), model.get_submodule(pair.second)
            r1 = _output_ranges(first, model.get_submodule(pair.norm) if pair.norm else None)
            r2 = _input_ranges(second, norms_of.get(pair.second))
            s = torch.where((r1 > 0) & (r2 > 0), torch.sqrt(r1 / r2.clamp_min(1e-12)), torch.ones_like(r1))
            rescale(model, pair, s)
            moved = max(moved, float(s.log().abs().max()))
            largest = max(largest, float(s.max()), float(1 / s.min()))
        if moved < SETTLED:
            break
    return model, {"pairs": len(pairs), "layers": [f"{p.first} -> {p.second}" for p in pairs], "rounds": rounds,
                   "largest_scale": round(largest, 3)}
