"""Training and evaluation loops shared by the stages: supervised and distillation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from edgekiln.stages.data import Dataset, to_input
from edgekiln.stages.modeling import ModelBundle
from edgekiln.stages.progress import epoch_bar


class KDConfig(BaseModel):
    """`[distill]`: logit distillation, loss = (1 - alpha) * CE + alpha * T^2 * KL."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(4.0, gt=0.0)
    alpha: float = Field(0.9, ge=0.0, le=1.0)


def device() -> torch.device:
    """CUDA when there is a GPU, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def logits(bundle: ModelBundle, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Logits (on the CPU) of `bundle` for uint8 `images`, in eval mode."""
    dev = device()
    model = bundle.model.to(dev).eval()
    out = [model(to_input(images[i : i + batch_size].to(dev), bundle.mean, bundle.std)).float().cpu()
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


def kd_loss(student_logits, teacher_logits, labels, kd: KDConfig) -> torch.Tensor:
    t = kd.temperature
    hard = F.cross_entropy(student_logits, labels)
    soft = F.kl_div(F.log_softmax(student_logits / t, 1), F.log_softmax(teacher_logits / t, 1),
                    reduction="batchmean", log_target=True) * t * t
    return (1.0 - kd.alpha) * hard + kd.alpha * soft


def fit(bundle: ModelBundle, data: Dataset, epochs: int, *, lr: float, seed: int, desc: str,
        teacher_logits: torch.Tensor | None = None, kd: KDConfig | None = None,
        batch_size: int = 64, weight_decay: float = 0.05) -> None:
    """Train `bundle.model` in place on the train split: AdamW with a one-cycle schedule.

    With `teacher_logits` (one row per training image, computed once: the inputs are not
    augmented, so they never change) the loss is the distillation loss of `kd`.
    """
    if epochs <= 0:
        return
    dev = device()
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = bundle.model.to(dev).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(data.train_y) / batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch)
    with epoch_bar() as bar:
        task = bar.add_task(desc, total=epochs, status="")
        for epoch in range(epochs):
            order = torch.randperm(len(data.train_y), generator=generator)
            total, seen = 0.0, 0
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                if len(idx) < 2:  # BatchNorm cannot train on a batch of one
                    continue
                x = to_input(data.train_x[idx].to(dev), bundle.mean, bundle.std)
                y = data.train_y[idx].to(dev)
                out = model(x)
                if teacher_logits is None:
                    loss = F.cross_entropy(out, y)
                else:
                    loss = kd_loss(out, teacher_logits[idx].to(dev), y, kd or KDConfig())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                total, seen = total + float(loss) * len(idx), seen + len(idx)
            bar.update(task, advance=1, status=f"loss {total / max(seen, 1):.3f}")
    model.cpu().eval()
