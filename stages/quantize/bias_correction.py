"""Empirical bias correction, a rung of the INT8 repair ladder.

Rounding a layer's weights to INT8 shifts the mean of each of its output channels, and the
shift compounds through the network; depthwise convolutions, with nine weights per channel,
shift the most (Nagel et al., "Data-Free Quantization Through Weight Equalization and Bias
Correction", ICCV 2019; AIMET's empirical bias correction). The shift is measured on the
calibration images, each layer alone on its float input, quantized as the sensitivity SQNR
quantizes it (sensitivity.py: activations uint8 per tensor, weights int8 per output channel),
and added back to the layer's bias, or, for a convolution whose output a batch norm
normalizes, to that batch norm's shift (measured on the convolution folded with it, as the
converters fold it, so the correction is exact per channel and per tensor).

The corrected float model is the quantize stage's model: its INT8 artifacts carry the
correction, and so do float encodings built from it (graded like any artifact). The ladder
keeps the rung only when the INT8 simulation scores higher on val.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils.fusion import fuse_conv_bn_weights

from edgekiln.stages.quantize.sensitivity import activation_int8, weight_int8

IMAGES = 256  # calibration images the shifts are measured on
BATCH = 64


def folded(conv: torch.nn.Conv2d, bn: torch.nn.BatchNorm2d | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The convolution's weight and bias with the batch norm after it folded in, as converters fold it."""
    w = conv.weight.detach().float()
    b = None if conv.bias is None else conv.bias.detach().float()
    if bn is None:
        return w, b
    weight, bias = fuse_conv_bn_weights(w, b, bn.running_mean.float(), bn.running_var.float(), bn.eps,
                                        None if bn.weight is None else bn.weight.detach().float(),
                                        None if bn.bias is None else bn.bias.detach().float())
    return weight.detach(), bias.detach()


def batch_norm_after(model: torch.nn.Module) -> dict[str, torch.nn.BatchNorm2d]:
    """conv name -> the batch norm that normalizes its output: the first BatchNorm2d registered
    after it in the same parent with as many features (timm's conv/bn pairs: conv_dw then bn1,
    conv then bn). A pairing that were wrong would only lower the rung's score on val."""
    after: dict[str, torch.nn.BatchNorm2d] = {}
    for parent_name, parent in model.named_modules():
        pending = None
        for name, child in parent.named_children():
            full = f"{parent_name}.{name}" if parent_name else name
            if isinstance(child, torch.nn.Conv2d):
                pending = (full, child)
            elif isinstance(child, torch.nn.BatchNorm2d) and pending is not None:
                if child.num_features == pending[1].out_channels and child.track_running_stats:
                    after[pending[0]] = child
                pending = None
    return after


def measure_shifts(model: torch.nn.Module, calibration: np.ndarray, per_channel: bool = True,
                   norms: dict[str, torch.nn.BatchNorm2d] | None = None) -> dict[str, torch.Tensor]:
    """Per layer (convolution or linear, with its batch norm folded in): the mean per output
    channel of float output minus INT8 output, on the first IMAGES calibration images.
    `norms`: `batch_norm_after(model)`, when the caller has it already."""
    model = model.cpu().eval()
    norms = batch_norm_after(model) if norms is None else norms
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    handles = []

    def watch(name: str, module: torch.nn.Module):
        def hook(_module, inputs, _output):
            x = inputs[0].detach().float()
            if isinstance(module, torch.nn.Conv2d):
                w, b = folded(module, norms.get(name))
                run = lambda x_, w_: F.conv2d(x_, w_, b, module.stride, module.padding, module.dilation,  # noqa: E731
                                              module.groups)
            else:
                w, b = module.weight.detach().float(), None if module.bias is None else module.bias.detach().float()
                run = lambda x_, w_: F.linear(x_, w_, b)  # noqa: E731
            error = run(x, w) - run(activation_int8(x), weight_int8(w, per_channel))
            axes = [d for d in range(error.dim()) if d != 1]
            total = error.sum(axes)
            sums[name] = total if name not in sums else sums[name] + total
            counts[name] = counts.get(name, 0) + int(error.numel() // error.shape[1])
        return hook

    for name, module in model.named_modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)) and module.weight is not None:
            handles.append(module.register_forward_hook(watch(name, module)))
    try:
        with torch.no_grad():
            images = np.ascontiguousarray(calibration[:IMAGES])
            for start in range(0, len(images), BATCH):
                model(torch.from_numpy(images[start:start + BATCH]).float())
    finally:
        for handle in handles:
            handle.remove()
    return {name: sums[name] / counts[name] for name in sums}


def corrected(model: torch.nn.Module, calibration: np.ndarray, per_channel: bool = True
              ) -> tuple[torch.nn.Module, dict]:
    """A copy of `model` with each layer's INT8 mean shift added back to its bias (or to the
    shift of the batch norm after it), and what was done: layers corrected, those left alone
    (no bias and no batch norm to carry it), the largest shift."""
    model = copy.deepcopy(model).cpu().eval()
    norms = batch_norm_after(model)
    shifts = measure_shifts(model, calibration, per_channel, norms)
    modules = dict(model.named_modules())
    done, skipped = [], []
    with torch.no_grad():
        for name, shift in shifts.items():
            # the shift was measured after the batch norm when one follows: only its own shift carries it
            carrier = norms[name].bias if name in norms else modules[name].bias
            if carrier is None:  # no bias, or a batch norm without an affine shift
                skipped.append(name)
                continue
            carrier.add_(shift.to(carrier.dtype))
            done.append(name)
    largest = max(shifts.items(), key=lambda kv: float(kv[1].abs().max()), default=None)
    return model, {"layers_corrected": len(done), "layers_without_a_bias": skipped,
                   "largest_shift": None if largest is None else
                   {"layer": largest[0], "value": round(float(largest[1].abs().max()), 6)},
                   "images": int(min(IMAGES, len(calibration)))}
