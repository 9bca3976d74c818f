"""Cross-layer equalization (stages/quantize/equalization.py): it finds the conv -> conv pairs
of timm's models, leaves their function unchanged, balances each pair's channel ranges, and
never touches a convolution whose output also goes elsewhere."""

import numpy as np
import pytest
import timm
import torch
from torch import nn

from edgekiln.stages.quantize import equalization
from edgekiln.stages.quantize.bias_correction import batch_norm_after


def _with_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """A fresh timm model's batch norms hold mean 0, variance 1, weight 1: give them spread
    statistics and affine parameters, as a trained model has, so equalizing has work to do."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                m.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                m.bias.copy_(torch.randn(n, generator=generator) * 0.1)
    return model.eval()


def _images(n=4, size=32):
    return np.random.default_rng(0).standard_normal((n, 3, size, size)).astype(np.float32)


# MobileNetV2's ReLU6 clips (not positive-homogeneous): only linear bottlenecks that feed no residual pair.
@pytest.mark.parametrize("arch,pairs", [("resnet10t", 6), ("mobilenetv3_small_050", 14), ("mobilenetv2_050", 2)])
def test_timm_models_are_equalized_without_changing_what_they_compute(arch, pairs):
    torch.manual_seed(0)
    model = _with_statistics(timm.create_model(arch, num_classes=10))
    images = _images()
    equalized, record = equalization.equalized(model, images)
    assert record["pairs"] == pairs, record
    x = torch.from_numpy(images)
    with torch.no_grad():
        before, after = model(x), equalized(x)
    # the same function, up to float32 rounding
    assert float((before - after).abs().max()) < 1e-4 * float(before.abs().max())
    # each pair's ranges now match channel by channel (the last round moved them little)
    pairs = equalization.candidate_pairs(equalized, x[:1])
    norms_after = batch_norm_after(equalized)
    kept = {f"{p.first} -> {p.second}" for p in pairs} & set(record["layers"])
    assert kept
    for pair in pairs:
        if f"{pair.first} -> {pair.second}" not in kept:
            continue
        r1 = equalization._output_ranges(equalized.get_submodule(pair.first),
                                         equalized.get_submodule(pair.norm) if pair.norm else None)
        r2 = equalization._input_ranges(equalized.get_submodule(pair.second), norms_after.get(pair.second))
        live = (r1 > 1e-6) & (r2 > 1e-6)
        assert torch.allclose(r1[live], r2[live], rtol=0.05), pair


def test_a_convolution_whose_output_also_feeds_a_residual_is_left_alone():
    class Forked(nn.Module):
        def __init__(self):
            super().__init__()
            self.first = nn.Conv2d(3, 8, 3, padding=1)
            self.second = nn.Conv2d(8, 8, 1)
            self.act = nn.ReLU()

        def forward(self, x):
            y = self.first(x)
            return self.second(self.act(y)) + y  # `first`'s output goes to the sum too

    model = Forked().eval()
    assert [(p.first, p.second) for p in equalization.candidate_pairs(model, torch.zeros(1, 3, 8, 8))] == [
        ("first", "second")]  # the trace sees the chain...
    _, record = equalization.equalized(model, _images(size=8))
    assert record["pairs"] == 0  # ...and the check that the function is unchanged refuses it


def test_channel_ranges_unbalanced_by_a_factor_of_a_thousand_are_brought_back_together():
    """The model a converter or an unregularized training leaves: one layer's channels scaled
    by 1/s and the next one's inputs by s, the same function with ranges 1,000x apart."""
    torch.manual_seed(0)
    model = _with_statistics(timm.create_model("resnet10t", num_classes=10))
    pair = next(p for p in equalization.candidate_pairs(model, torch.zeros(1, 3, 32, 32)) if p.norm)
    channels = model.get_submodule(pair.second).in_channels
    equalization.rescale(model, pair, torch.logspace(-1.5, 1.5, channels))
    norm = model.get_submodule(pair.norm)

    def spread(m):
        r = equalization._output_ranges(m.get_submodule(pair.first), m.get_submodule(pair.norm))
        return float(r.max() / r.min())

    assert spread(model) > 300 and norm is not None
    equalized, _ = equalization.equalized(model, _images())
    assert spread(equalized) < spread(model) / 30
