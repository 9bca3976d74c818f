"""The learning rate found, not guessed: a learning-rate range test (Smith, "Cyclical Learning
Rates for Training Neural Networks", 2017; the "LR finder" of fastai). A copy of the model
trains for a few dozen steps while the rate grows geometrically from LOW to HIGH; the loss
(smoothed) falls, bottoms out and blows up. The rate chosen is a tenth of the one at the
lowest smoothed loss: the fastest rate that is still well short of where training turns
unstable. It costs `steps` optimizer steps on a copy, and nothing of it is kept but the rate.

A loop with `lr = "auto"` uses it ([teacher] and [student]); the record (curve included) goes
into the manifest beside the candidate."""

from __future__ import annotations

import copy
import math
import time

import numpy as np
import torch

from edgekiln.training.config import DistillConfig, TrainConfig

LOW, HIGH = 1e-5, 1.0
STEPS = 60
SMOOTHING = 0.9  # exponential moving average of the loss, bias-corrected
BLOWN_UP = 4.0  # stop once the smoothed loss is this many times its lowest


def choose(rates: list[float], losses: list[float]) -> tuple[float, str]:
    """(rate, why) from a range test's smoothed losses: a tenth of the rate at the lowest."""
    best = int(np.argmin(losses))
    rate = rates[best] / 10.0
    return rate, f"a tenth of {rates[best]:.3g}, where the smoothed loss was lowest ({losses[best]:.3f})"


def find(bundle, data, train: TrainConfig, *, seed: int, teacher=None, kd: DistillConfig | None = None,
         steps: int = STEPS, low: float = LOW, high: float = HIGH, desc: str = "the range test") -> dict:
    """The range test of `bundle.model` on `data`'s training images (with `teacher`'s KD loss
    where given, as the loop will train); returns {"lr", "why", "steps", "seconds", "curve"}.
    TrainingDiverged, naming `desc`, when the loss is not finite even at the lowest rates."""
    from edgekiln.errors import TrainingDiverged
    from edgekiln.training.distillation import kd_loss
    from edgekiln.training.evaluation import device, model_input
    from edgekiln.training.trainer import hard_loss

    started = time.perf_counter()
    dev = device()
    model = copy.deepcopy(bundle.model).to(dev).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=low,
                                  weight_decay=train.weight_decay)
    if teacher is not None:
        teacher.to(dev)
    generator = torch.Generator().manual_seed(seed)
    factor = (high / low) ** (1.0 / max(steps - 1, 1))
    rates, smoothed, average = [], [], 0.0
    order = torch.randperm(len(data.train_y), generator=generator)
    batch = min(train.batch_size, len(order))
    for step in range(steps):
        rate = low * factor**step
        for group in optimizer.param_groups:
            group["lr"] = rate
        start = (step * batch) % max(len(order) - batch + 1, 1)
        idx = order[start : start + batch]
        images = data.train_x[idx].to(dev).float().div_(255.0)
        y = data.train_y[idx].to(dev)
        out = model(model_input(bundle, images)).float()
        loss = hard_loss(out, y, train.label_smoothing)
        if teacher is not None:
            with torch.no_grad():
                t_logits, _ = teacher(images)
            loss = kd_loss(out, loss, t_logits.float(), kd or DistillConfig())
        value = float(loss.detach())
        if not math.isfinite(value):
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        average = SMOOTHING * average + (1 - SMOOTHING) * value
        rates.append(rate)
        smoothed.append(average / (1 - SMOOTHING ** (step + 1)))
        if len(smoothed) > 5 and smoothed[-1] > BLOWN_UP * min(smoothed):
            break
    if teacher is not None:
        teacher.to(torch.device("cpu"))
    if len(rates) < 5:
        raise TrainingDiverged(f"{desc}: the learning-rate range test (lr = \"auto\") gave a non-finite loss "
                               f"within {len(rates)} steps from {low:g}: the data or the model, not the rate, "
                               "is the likely cause")
    rate, why = choose(rates, smoothed)
    every = max(1, len(rates) // 20)  # the curve, thinned for the manifest
    return {"lr": float(rate), "why": why, "steps": len(rates), "seconds": round(time.perf_counter() - started, 2),
            "range": [low, high], "curve": [[float(r), round(float(s), 4)] for r, s in
                                            list(zip(rates, smoothed))[::every]]}
