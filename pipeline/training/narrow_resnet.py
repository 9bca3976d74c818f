"""Narrow ResNets for server CPUs: timm's ResNet-10-T at a quarter to a half of its width,
registered in timm's model registry as `resnet10t_w16`, `resnet10t_w24` and `resnet10t_w32`
(the number: the first stage's channels; timm's resnet10t has 64).

Why they exist: on an x86 CPU, onnxruntime's INT8 kernels pay most on plain convolutions,
and little on depthwise ones or attention's small operators, so the smallest mobile student
is not the fastest there (BENCHMARKS.md: MobileViT-XXS's INT8 ONNX ran 1.1x its own fp32).
A narrow ResNet is small enough for a phone and fast where INT8 convolutions are. They have
no published weights: they are students, trained by distillation.
"""

from __future__ import annotations

import sys

WIDTHS = (16, 24, 32)


def name(width: int) -> str:
    return f"resnet10t_w{width}"


def register() -> None:
    """Add the narrow ResNets to timm's registry (once per process), so that every place
    that builds a model by name (timm.create_model, a saved bundle reloaded) can build them."""
    import timm
    from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
    from timm.models.resnet import BasicBlock, ResNet, _cfg

    if timm.is_model(name(WIDTHS[0])):
        return
    module = sys.modules[__name__]
    # No weights to download: the configs only say what the models take (timm warns without one).
    module.default_cfgs = generate_default_cfgs({name(w): _cfg(url="") for w in WIDTHS})
    for width in WIDTHS:
        def create(pretrained: bool = False, _width: int = width, **kwargs) -> ResNet:
            if pretrained:
                raise ValueError(f"{name(_width)} has no published weights (it is built to be distilled into)")
            args = dict(block=BasicBlock, layers=(1, 1, 1, 1), stem_width=16, stem_type="deep_tiered", avg_down=True,
                        channels=tuple(_width * 2 ** i for i in range(4)))
            return build_model_with_cfg(ResNet, name(_width), False, **dict(args, **kwargs))

        create.__name__ = create.__qualname__ = name(width)
        create.__doc__ = f"ResNet-10-T with {width}/{2 * width}/{4 * width}/{8 * width} channels (edgekiln)."
        setattr(module, create.__name__, create)  # timm's registry looks the function up in its module
        register_model(create)
