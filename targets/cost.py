"""Cost features of a model, the inputs of the `estimate` latency runner.

The same features describe the reference models of a profile's calibration table
(computed from their timm architectures) and an artifact being estimated (computed at
export time and stored in the artifact's metadata), so the two are comparable.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

# Bytes per weight and per activation value for an artifact's precision.
PRECISION_BYTES = {"float": (4, 4), "fp16": (2, 2), "w8a16": (1, 2), "w8a8": (1, 1), "int8": (1, 1),
                   "dynamic": (1, 4),  # dynamic-range INT8: INT8 weights, float activations
                   "int16x8": (1, 2)}  # TFLite 16x8: INT8 weights, int16 activations


@dataclass(frozen=True)
class CostFeatures:
    """Per batch-1 inference: multiply-accumulates split by op kind, parameters, and the
    number of activation values the layers write (a proxy for activation memory traffic)."""

    macs: int  # all convolutions, linear layers and matmuls
    depthwise_macs: int  # depthwise convolutions: memory-bound on every CPU
    params: int
    activations: int
    image_size: int
    # Leaf modules run per inference: each is at least one kernel the runtime dispatches, and
    # that per-op cost, not MACs, is most of a small model's latency. None: counted before
    # edgekiln recorded it (such an artifact is estimated only by a table without it).
    layers: int | None = None

    @property
    def dense_macs(self) -> int:
        return self.macs - self.depthwise_macs

    def traffic_bytes(self, precision: str) -> float:
        """Bytes moved per inference at `precision`: weights read once, activations written."""
        weight_bytes, activation_bytes = PRECISION_BYTES[precision]
        return self.params * weight_bytes + self.activations * activation_bytes

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CostFeatures":
        layers = d.get("layers")
        return cls(**{k: int(d[k]) for k in ("macs", "depthwise_macs", "params", "activations", "image_size")},
                   layers=None if layers in (None, "") else int(layers))


def cost_features(model: nn.Module, image_size: int) -> CostFeatures:
    """Count the cost features of `model` on one `image_size` RGB image (eval mode, CPU)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = model.cpu().eval()
    depthwise = 0
    activations = 0
    layers = 0

    def on_conv(module: nn.Conv2d, _inputs, output) -> None:
        nonlocal depthwise
        if module.groups > 1 and module.groups == module.in_channels:
            kernel = module.kernel_size[0] * module.kernel_size[1]
            depthwise += output.numel() * kernel

    def on_leaf(_module, _inputs, output) -> None:
        nonlocal activations, layers
        layers += 1
        if isinstance(output, torch.Tensor):
            activations += output.numel()

    hooks = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            hooks.append(module.register_forward_hook(on_conv))
        if not any(True for _ in module.children()):
            hooks.append(module.register_forward_hook(on_leaf))
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            model(torch.zeros(1, 3, image_size, image_size))
    finally:
        for h in hooks:
            h.remove()
    return CostFeatures(macs=int(counter.get_total_flops() // 2), depthwise_macs=int(depthwise),
                        params=int(sum(p.numel() for p in model.parameters())),
                        activations=int(activations), image_size=int(image_size), layers=layers)
