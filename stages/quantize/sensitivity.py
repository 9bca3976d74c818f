"""Per-layer INT8 sensitivity: the signal-to-quantization-noise ratio (SQNR) of each
convolution's and linear layer's output, between the float model and that layer run in INT8,
on the calibration images, in dB per output channel and averaged over the channels (a layer
whose one loud channel crushes the others by its scale scores low, though its total energy
is kept). Users ask "which layers should I keep in float, and why?": this shows where INT8
is noisy, layer by layer, in seconds. It is not the ranking the ladder keeps layers in float
by: that one scores each layer's effect on the whole model's logits (a simulation per
layer), and on Fashion-MNIST, the Debian icons and digits the two orders hardly agree
(Spearman +0.17, +0.18, -0.02 over 54 layers; the layer that moved the logits most ranked
26th, 39th and 52nd here: BENCHMARKS.md): a noisy layer whose error later layers absorb
costs little, a quiet one feeding the classifier (conv_head) much. So the SQNR cannot stand
in for it; report.html shows both side by side.

Each layer is quantized alone, on its own float input, as the INT8 artifacts run it: input
and output activations asymmetric uint8 per tensor (min/max over the images), weights
symmetric int8 per output channel (per tensor where `per_channel` is off). One forward pass
with hooks; seconds, not a simulation per layer."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

IMAGES = 64  # calibration images the SQNR is measured on
SATURATED_DB = 99.0  # no quantization noise at all (a layer of zeros): shown as this


def activation_int8(x: torch.Tensor) -> torch.Tensor:
    """`x` fake-quantized to uint8, per tensor, on its own min/max (0 always representable)."""
    low, high = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = (high - low) / 255 or 1.0
    zero = int(round(-low / scale))
    return torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, 255)


def weight_int8(w: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """`w` fake-quantized to symmetric int8, per output channel or per tensor."""
    if not per_channel:
        scale = float(w.abs().max()) / 127 or 1.0
        return torch.fake_quantize_per_tensor_affine(w, scale, 0, -127, 127)
    scales = (w.abs().flatten(1).amax(1) / 127).clamp(min=1e-12).float()
    return torch.fake_quantize_per_channel_affine(w, scales, torch.zeros_like(scales, dtype=torch.int32), 0, -127, 127)


def sqnr_db(signal: float, noise: float) -> float:
    if noise <= 0:
        return SATURATED_DB
    return round(min(SATURATED_DB, 10 * math.log10(max(signal, 1e-30) / noise)), 2)


def layer_sqnr(model: torch.nn.Module, calibration: np.ndarray, per_channel: bool = True,
               float_layers: tuple[str, ...] = ()) -> list[dict]:
    """Every convolution and linear layer of `model` with its INT8 output SQNR in dB on the
    first IMAGES of `calibration` (the model's prepared input), lowest first; `in_float`: the
    layer is kept in float in the artifacts (the accuracy-aware step chose it)."""
    model = model.cpu().eval()
    totals: dict[str, list[torch.Tensor]] = {}
    handles = []

    def watch(name: str, module: torch.nn.Module):
        def hook(_module, inputs, output):
            x, y = inputs[0].detach().float(), output.detach().float()
            w = weight_int8(module.weight.detach().float(), per_channel)
            bias = None if module.bias is None else module.bias.detach().float()
            if isinstance(module, torch.nn.Conv2d):
                quantized = F.conv2d(activation_int8(x), w, bias, module.stride, module.padding, module.dilation,
                                     module.groups)
            else:
                quantized = F.linear(activation_int8(x), w, bias)
            quantized = activation_int8(quantized)
            axes = [d for d in range(y.dim()) if d != 1]  # per output channel: batch and space summed
            signal, noise = y.pow(2).sum(axes), (y - quantized).pow(2).sum(axes)
            if name in totals:
                signal, noise = signal + totals[name][0], noise + totals[name][1]
            totals[name] = [signal, noise]
        return hook

    order = []
    for name, module in model.named_modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)) and module.weight is not None:
            order.append(name)
            handles.append(module.register_forward_hook(watch(name, module)))
    try:
        with torch.no_grad():
            model(torch.from_numpy(np.ascontiguousarray(calibration[:IMAGES])).float())
    finally:
        for handle in handles:
            handle.remove()
    layers = []
    for name in order:
        if name not in totals:
            continue
        signal, noise = totals[name]
        channels = [sqnr_db(float(s_), float(n_)) for s_, n_ in zip(signal, noise) if float(s_) > 0]
        layers.append({"layer": name, "sqnr_db": round(float(np.mean(channels)), 2) if channels else SATURATED_DB,
                       "worst_channel_db": min(channels) if channels else SATURATED_DB, "in_float": name in float_layers})
    return sorted(layers, key=lambda r: r["sqnr_db"])


METHOD = (f"each layer alone on its float input, on {IMAGES} calibration images: activations uint8 per tensor "
          "(min/max), weights int8 per output channel (per tensor with per_channel = false); SQNR of its output "
          "against float, in dB per output channel, averaged over the channels")
