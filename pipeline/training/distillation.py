"""The distillation signal: the teachers' averaged logits (each at its own input size and
normalization), computed per step or once up front into memory-mapped buffers, the FitNets
hint on the last feature map through a learned 1x1 projection, and the KD loss."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgekiln.data.image_files import batches
from edgekiln.training.config import DistillConfig
from edgekiln.training.evaluation import device, features_and_logits, model_input
from edgekiln.training.modeling import ModelBundle


def _as_map(features: torch.Tensor) -> torch.Tensor:
    """Feature maps stay [B, C, H, W]; transformer tokens [B, N, C] and vectors [B, C] become
    [B, C, 1, 1] (the token mean), so that any teacher can give a hint."""
    if features.dim() == 3:
        features = features.mean(1)
    if features.dim() == 2:
        features = features[:, :, None, None]
    return features


class Teacher:
    """The distillation signal: averaged logits of one or more teachers, each fed at its own
    input size and normalization, plus the first teacher's feature map for a hint loss."""

    def __init__(self, bundles: list[ModelBundle], hint_size: int | None = None):
        self.bundles = bundles
        self.hint_size = hint_size  # spatial size the hint features are pooled to; None = no hint

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits, hint features or None) for a batch of images already on the device."""
        all_logits, hint = [], None
        for i, bundle in enumerate(self.bundles):
            x = model_input(bundle, images)
            if i == 0 and self.hint_size is not None:
                features, out = features_and_logits(bundle.model, x)
                hint = F.adaptive_avg_pool2d(_as_map(features).float(), self.hint_size)
            else:
                out = bundle.model(x)
            all_logits.append(out.float())
        return torch.stack(all_logits).mean(0), hint

    def to(self, dev: torch.device) -> "Teacher":
        for bundle in self.bundles:
            bundle.model.to(dev).eval()
        return self

    @torch.no_grad()
    def precompute(self, images, batch_size: int = 256, workers: int = 0,
                   logits_dtype: torch.dtype = torch.float16) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Outputs for every image: logits shifted so that each row's largest is 0 (the
        distillation loss reads them through a softmax, which the shift does not change), in
        `logits_dtype`, and hint features in float16. In memory for images in memory; for
        streamed images, in a file mapped into memory (the OS pages it in and out), so the
        outputs of a large set do not have to fit in RAM either.

        float16 halves the memory of float32 at no measurable cost (BENCHMARKS.md): after the
        shift, rounding a logit v <= 0 to 11 bits moves its softened probability p by at most
        p * |v| / T * 2^-11, and p <= exp(v / T), so by under 2e-4 whatever the temperature T
        (the error of a logit grows with its distance from the largest; its probability
        shrinks faster)."""
        dev = device()
        self.to(dev)
        n = len(images)
        order = torch.arange(n)
        index_batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
        out = hint = None
        on_disk = not isinstance(images, torch.Tensor)  # streamed: a large set
        for idx, batch in zip(index_batches, batches(images, index_batches, workers)):
            logits, features = self(batch.to(dev))
            if out is None:
                out = _buffer((n, *logits.shape[1:]), logits_dtype, on_disk)
                if self.hint_size is not None:
                    hint = _buffer((n, *features.shape[1:]), torch.float16, on_disk)
            logits = logits.float()
            shifted = logits - logits.amax(1, keepdim=True)
            out[idx] = shifted.clamp_min(torch.finfo(logits_dtype).min).to(logits_dtype).cpu()
            if hint is not None:
                hint[idx] = features.half().cpu()
        self.to(torch.device("cpu"))
        return out, hint


def _buffer(shape: tuple[int, ...], dtype: torch.dtype, on_disk: bool) -> torch.Tensor:
    """A zeroed tensor, in memory or backed by an unlinked temporary file (freed with it)."""
    if not on_disk:
        return torch.zeros(shape, dtype=dtype)
    fd, path = tempfile.mkstemp(prefix="edgekiln-teacher-outputs-")
    try:
        mapped = np.memmap(path, dtype=np.float32 if dtype == torch.float32 else np.float16, mode="w+", shape=shape)
    finally:
        os.close(fd)
        os.unlink(path)  # the mapping keeps the space until the tensor is gone
    return torch.from_numpy(mapped)


class HintProjection(nn.Module):
    """FitNets regressor: pools the student's feature map to the teacher's hint size and
    maps its channels onto the teacher's with a 1x1 convolution. Trained, then dropped."""

    def __init__(self, student_channels: int, teacher_channels: int, size: int):
        super().__init__()
        self.size = size
        self.proj = nn.Conv2d(student_channels, teacher_channels, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.proj(F.adaptive_avg_pool2d(_as_map(features), self.size))


@torch.no_grad()
def _feature_shape(bundle: ModelBundle) -> tuple[int, int]:
    """(channels, spatial size) of a model's last feature map at its input size."""
    model = bundle.model.cpu().eval()
    features, _ = features_and_logits(model, model_input(bundle, torch.zeros(2, 3, 8, 8, dtype=torch.uint8)))
    features = _as_map(features)
    return int(features.shape[1]), int(features.shape[-1])


def hinted_teacher(teachers: list[ModelBundle], student: ModelBundle, kd: DistillConfig) -> tuple[Teacher, HintProjection | None]:
    """The teacher signal for `kd`, and the FitNets projection when a feature loss is asked."""
    if kd.feature_loss == "none":
        return Teacher(teachers), None
    s_channels, s_size = _feature_shape(student)
    t_channels, t_size = _feature_shape(teachers[0])
    size = min(s_size, t_size)
    return Teacher(teachers, hint_size=size), HintProjection(s_channels, t_channels, size)


def kd_loss(out: torch.Tensor, hard: torch.Tensor, teacher_logits: torch.Tensor, kd: DistillConfig) -> torch.Tensor:
    """(1 - alpha) * the hard loss + alpha * T^2 * KL(teacher || student) at temperature T."""
    t = kd.temperature
    soft = F.kl_div(F.log_softmax(out / t, 1), F.log_softmax(teacher_logits / t, 1),
                    reduction="batchmean", log_target=True) * t * t
    return (1.0 - kd.alpha) * hard + kd.alpha * soft
