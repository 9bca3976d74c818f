"""Training and evaluation loops shared by the stages: supervised fine-tuning and distillation.

One recipe (`[train]`) for every loop: AdamW, cosine schedule with linear warm-up, label
smoothing, optional EMA of the weights and timm augmentation (RandAugment, mixup/cutmix).
Distillation (`[distill]`) adds logit KD from one or more teachers and, optionally, a
FitNets hint loss on the last feature map through a learned 1x1 projection.
"""

from __future__ import annotations

import math
import random
import time
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from edgekiln.stages.data import Dataset, to_input
from edgekiln.stages.modeling import ModelBundle
from edgekiln.stages.progress import epoch_bar


class TrainConfig(BaseModel):
    """`[train]`: the recipe every training loop uses (teacher fine-tune, distillation,
    pruning recovery). Epochs and learning rates stay in each stage's own section."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(64, ge=2, le=4096)
    weight_decay: float = Field(0.05, ge=0.0)
    warmup_epochs: float = Field(1.0, ge=0.0)
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    ema_decay: float | None = Field(None, gt=0.0, lt=1.0)
    randaugment: str | None = None  # a timm RandAugment string, e.g. "rand-m9-mstd0.5"
    mixup: float = Field(0.0, ge=0.0)  # Beta(alpha, alpha) of mixup; 0 = off
    cutmix: float = Field(0.0, ge=0.0)  # Beta(alpha, alpha) of cutmix; 0 = off
    # Random translation of up to this share of the image size each way (edges replicated),
    # applied per image on the device: cheap, and the augmentation small images need most.
    translate: float = Field(0.0, ge=0.0, le=0.5)
    hflip: bool = False  # random horizontal flips (not for digits or text)

    @field_validator("randaugment")
    @classmethod
    def _timm_accepts(cls, value: str | None) -> str | None:
        if value is not None:
            from timm.data.auto_augment import rand_augment_transform

            try:
                rand_augment_transform(value, {})
            except Exception as e:
                raise ValueError(f"not a timm RandAugment string ({e}); e.g. 'rand-m9-mstd0.5'") from None
        return value

    @property
    def deterministic_inputs(self) -> bool:
        """Every epoch feeds the same images: a teacher's outputs can be computed once."""
        return (self.randaugment is None and self.mixup == 0.0 and self.cutmix == 0.0
                and self.translate == 0.0 and not self.hflip)


class DistillConfig(BaseModel):
    """`[distill]`: loss = (1 - alpha) * CE + alpha * T^2 * KL(teacher || student)
    [+ feature_weight * MSE(hint(student features), teacher features) with FitNets]."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(4.0, gt=0.0)
    alpha: float = Field(0.9, ge=0.0, le=1.0)
    feature_loss: Literal["none", "fitnets"] = "none"
    feature_weight: float = Field(1.0, ge=0.0)


def device() -> torch.device:
    """CUDA when there is a GPU, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def model_input(bundle: ModelBundle, images: torch.Tensor) -> torch.Tensor:
    """Images (uint8, or float in [0, 1]) as `bundle`'s model expects them: its size, its
    normalization."""
    return to_input(images, bundle.mean, bundle.std, bundle.input_size)


def features_and_logits(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The last feature map (before pooling) and the logits, from one forward pass."""
    if hasattr(model, "features_and_logits"):  # models wrapped from other libraries
        return model.features_and_logits(x)
    features = model.forward_features(x)
    return features, model.forward_head(features)


@torch.no_grad()
def logits(bundle: ModelBundle, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Logits (on the CPU) of `bundle` for uint8 `images`, in eval mode."""
    dev = device()
    model = bundle.model.to(dev).eval()
    out = [model(model_input(bundle, images[i : i + batch_size].to(dev))).float().cpu()
           for i in range(0, len(images), batch_size)]
    bundle.model.cpu()
    return torch.cat(out)


def accuracy(predicted_logits, labels) -> float:
    """Top-1 accuracy in percent."""
    predicted = torch.as_tensor(predicted_logits).argmax(1)
    return float((predicted == torch.as_tensor(labels)).double().mean() * 100.0)


def evaluate(bundle: ModelBundle, data: Dataset) -> float:
    """Top-1 accuracy (percent) of `bundle` on the whole val split."""
    return accuracy(logits(bundle, data.val_x), data.val_y)


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

    def precompute(self, images: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Outputs for every image (kept on the CPU; hint features in float16)."""
        dev = device()
        self.to(dev)
        parts = [self(images[i : i + batch_size].to(dev)) for i in range(0, len(images), batch_size)]
        self.to(torch.device("cpu"))
        out = torch.cat([p[0].cpu() for p in parts])
        hint = torch.cat([p[1].half().cpu() for p in parts]) if self.hint_size is not None else None
        return out, hint


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


def _randaugment(images: torch.Tensor, transform) -> torch.Tensor:
    """Apply a timm (PIL) RandAugment transform to each uint8 NCHW image."""
    from PIL import Image

    out = [np.asarray(transform(Image.fromarray(img.permute(1, 2, 0).numpy()))) for img in images]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def shift_and_flip(images: torch.Tensor, translate: float, hflip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random translation (up to `translate` of the size each way, edge pixels replicated) and
    optional horizontal flip of a float NCHW batch, drawn from `generator` (on the CPU)."""
    n = images.shape[0]
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    if hflip:
        theta[:, 0, 0] = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    if translate > 0:
        theta[:, :, 2] = (torch.rand(n, 2, generator=generator) * 2 - 1) * 2 * translate  # grid spans [-1, 1]
    grid = F.affine_grid(theta.to(images.device), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def fit(bundle: ModelBundle, data: Dataset, epochs: int, *, lr: float, seed: int, desc: str,
        train: TrainConfig | None = None, teacher: Teacher | None = None,
        hint: HintProjection | None = None, kd: DistillConfig | None = None,
        cache_teacher: bool = True) -> dict:
    """Train `bundle.model` in place on the train split with the `train` recipe.

    With a `teacher` the loss is `kd`'s distillation loss. When the inputs are the same every
    epoch (no augmentation) and `cache_teacher` is on, the teacher's outputs are computed
    once up front instead of in every step. Returns timing figures for benchmarks.
    """
    from timm.data import Mixup
    from timm.scheduler import CosineLRScheduler
    from timm.utils import ModelEmaV3

    train, kd = train or TrainConfig(), kd or DistillConfig()
    if epochs <= 0:
        return {}
    dev = device()
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    model = bundle.model.to(dev).train()
    params = list(model.parameters()) + (list(hint.to(dev).parameters()) if hint is not None else [])
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=train.weight_decay)
    steps_per_epoch = math.ceil(len(data.train_y) / train.batch_size)
    total_steps = epochs * steps_per_epoch
    warmup = min(int(train.warmup_epochs * steps_per_epoch), total_steps - 1)
    schedule = CosineLRScheduler(optimizer, t_initial=total_steps - warmup, lr_min=lr * 0.01,
                                 warmup_t=warmup, warmup_lr_init=lr * 0.01, warmup_prefix=True,
                                 t_in_epochs=False)
    ema = ModelEmaV3(model, decay=train.ema_decay, use_warmup=True) if train.ema_decay else None
    augment = None
    if train.randaugment:
        from timm.data.auto_augment import rand_augment_transform

        augment = rand_augment_transform(train.randaugment, {"img_mean": (124, 116, 104)})
    mix = None
    if train.mixup > 0 or train.cutmix > 0:
        mix = Mixup(mixup_alpha=train.mixup, cutmix_alpha=train.cutmix, label_smoothing=train.label_smoothing,
                    num_classes=data.num_classes)
    cached = None
    started = time.perf_counter()
    if teacher is not None and cache_teacher and train.deterministic_inputs:
        cached = teacher.precompute(data.train_x)
    elif teacher is not None:
        teacher.to(dev)
    precompute_seconds = time.perf_counter() - started
    epoch_seconds = []
    step = 0
    with epoch_bar() as bar:
        task = bar.add_task(desc, total=epochs, status="")
        for _ in range(epochs):
            epoch_start = time.perf_counter()
            order = torch.randperm(len(data.train_y), generator=generator)
            total, seen = 0.0, 0
            for start in range(0, len(order), train.batch_size):
                idx = order[start : start + train.batch_size]
                if mix is not None and len(idx) % 2:  # timm's mixup pairs images within the batch
                    idx = idx[:-1]
                if len(idx) < 2:  # BatchNorm cannot train on a batch of one
                    continue
                images = data.train_x[idx]
                if augment is not None:
                    images = _randaugment(images, augment)
                images = images.to(dev).float().div_(255.0)
                if train.translate > 0 or train.hflip:
                    images = shift_and_flip(images, train.translate, train.hflip, generator)
                y = data.train_y[idx].to(dev)
                if mix is not None:
                    images, y = mix(images, y)  # soft targets, label smoothing included
                x = model_input(bundle, images)
                if hint is not None:
                    features, out = features_and_logits(model, x)
                else:
                    out = model(x)
                if y.dim() == 2:
                    hard = F.cross_entropy(out, y)
                else:
                    hard = F.cross_entropy(out, y, label_smoothing=train.label_smoothing)
                loss = hard
                if teacher is not None:
                    if cached is not None:
                        t_logits = cached[0][idx].to(dev)
                        t_hint = cached[1][idx].to(dev).float() if cached[1] is not None else None
                    else:
                        t_logits, t_hint = teacher(images)
                    t = kd.temperature
                    soft = F.kl_div(F.log_softmax(out / t, 1), F.log_softmax(t_logits / t, 1),
                                    reduction="batchmean", log_target=True) * t * t
                    loss = (1.0 - kd.alpha) * hard + kd.alpha * soft
                    if hint is not None:
                        loss = loss + kd.feature_weight * F.mse_loss(hint(features), t_hint)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                schedule.step_update(step)
                if ema is not None:
                    ema.update(model, step=step)
                total, seen = total + float(loss.detach()) * len(idx), seen + len(idx)
            epoch_seconds.append(time.perf_counter() - epoch_start)
            bar.update(task, advance=1, status=f"loss {total / max(seen, 1):.3f}")
    if ema is not None:
        model.load_state_dict(ema.module.state_dict())
    if teacher is not None:
        teacher.to(torch.device("cpu"))
    model.cpu().eval()
    return {"epoch_seconds": epoch_seconds, "teacher_precompute_seconds": precompute_seconds}
