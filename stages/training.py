"""Training and evaluation loops shared by the stages: supervised fine-tuning and distillation.

One recipe (`[train]`) for every loop: AdamW, cosine schedule with linear warm-up, label
smoothing, optional EMA of the weights and timm augmentation (RandAugment, mixup/cutmix).
Distillation (`[distill]`) adds logit KD from one or more teachers and, optionally, a
FitNets hint loss on the last feature map through a learned 1x1 projection.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
import os
import random
import re
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgekiln.stages.config import DistillConfig, TrainConfig
from edgekiln.stages.data import Dataset, to_input
from edgekiln.stages import distributed
from edgekiln.stages import schedule as schedules
from edgekiln.stages.errors import TrainingDiverged
from edgekiln.stages.image_files import SampleAugment, batches
from edgekiln.stages.modeling import ModelBundle
from edgekiln.stages.progress import console, epoch_bar
from edgekiln.stages.schedule import Schedule
from edgekiln.targets import disk

# Where the running stage's training loops checkpoint every epoch (set by the runner per
# stage key, so a re-run after a kill resumes there); None: no checkpoints.
_CHECKPOINTS: contextvars.ContextVar[Path | None] = contextvars.ContextVar("checkpoints", default=None)


@contextlib.contextmanager
def checkpointing(directory: Path | None) -> Iterator[None]:
    """Training loops inside checkpoint every epoch into `directory` and resume from it."""
    token = _CHECKPOINTS.set(directory)
    try:
        yield
    finally:
        _CHECKPOINTS.reset(token)


def _checkpoint_bytes(model, ema, hint) -> int:
    """About what one checkpoint of a loop takes: the weights, AdamW's two moments of each,
    the EMA copy and the hint layer (the temporary file and the previous checkpoint
    coexist for a moment, hence twice this when checking the room)."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    trained = sum(p.numel() * p.element_size() for p in model.parameters())
    extra = 0 if ema is None else weights
    extra += 0 if hint is None else 3 * sum(p.numel() * p.element_size() for p in hint.parameters())
    return weights + 2 * trained + extra


def _capture_rng() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _rng_for_storage(state: dict) -> dict:
    """The RNG states in types torch.load(weights_only=True) reads back."""
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    return {**state, "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss),
                               float(gauss)], "python": [state["python"][0], list(state["python"][1]),
                                                         state["python"][2]]}


def _rng_from_storage(stored: dict) -> dict:
    kind, keys, pos, has_gauss, gauss = stored["numpy"]
    version, internal, gauss_next = stored["python"]
    return {**stored, "numpy": (kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss),
            "python": (version, tuple(internal), gauss_next)}


def device() -> torch.device:
    """CUDA when there is a GPU (this rank's, under torchrun), else the CPU."""
    return distributed.device()


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


class _Step(nn.Module):
    """The model's training forward, and the hint projection's when distilling with a hint:
    one module, so DistributedDataParallel sees every parameter the loss depends on."""

    def __init__(self, model: nn.Module, hint: nn.Module | None):
        super().__init__()
        self.model, self.hint = model, hint

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.hint is None:
            return self.model(x), None
        features, out = features_and_logits(self.model, x)
        return out, self.hint(features)


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


def shift_and_flip(images: torch.Tensor, translate: float, hflip: bool, generator: torch.Generator,
                   share: tuple[int, int, int] | None = None) -> torch.Tensor:
    """Random translation (up to `translate` of the size each way, edge pixels replicated) and
    optional horizontal flip of a float NCHW batch, drawn from `generator` (on the CPU).
    `share` = (global batch size, rank, world size): `images` are this rank's share of a
    larger batch; the draws are made for the whole batch, so every rank's generator stays in
    step (it also orders the next epoch)."""
    n = images.shape[0] if share is None else share[0]
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    if hflip:
        theta[:, 0, 0] = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    if translate > 0:
        theta[:, :, 2] = (torch.rand(n, 2, generator=generator) * 2 - 1) * 2 * translate  # grid spans [-1, 1]
    if share is not None:
        theta = theta[share[1]::share[2]]
    grid = F.affine_grid(theta.to(images.device), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


class Trainer:
    """One training run of `bundle.model` on the train split with the `train` recipe, over a
    schedule of `epochs`, that can stop after any epoch and go on later (`train_until`):
    stopping at epoch k and going on gives the same weights as running straight through.

    With a `teacher` the loss is `kd`'s distillation loss. When the inputs are the same every
    epoch (no augmentation) and `cache_teacher` is on, the teacher's outputs are computed
    once up front instead of in every step."""

    def __init__(self, bundle: ModelBundle, data: Dataset, epochs: int, *, lr: float, seed: int, desc: str,
                 train: TrainConfig | None = None, teacher: Teacher | None = None,
                 hint: HintProjection | None = None, kd: DistillConfig | None = None, cache_teacher: bool = True,
                 lr_key: str = "lr", resumable: bool = True):
        from timm.data import Mixup
        from timm.scheduler import CosineLRScheduler
        from timm.utils import ModelEmaV3

        # What a follower rank needs to build the same trainer (see stages/distributed.py).
        spec = dict(bundle=bundle, data=data, epochs=epochs, lr=lr, seed=seed, desc=desc, train=train,
                    teacher=teacher, hint=hint, kd=kd, cache_teacher=cache_teacher, lr_key=lr_key)
        self.bundle, self.data, self.epochs, self.desc = bundle, data, epochs, desc
        self.lr, self.lr_key = lr, lr_key  # named when training diverges
        self.train, self.kd = train or TrainConfig(), kd or DistillConfig()
        self.teacher, self.hint = teacher, hint
        self.epoch, self.step = 0, 0
        self.epoch_seconds: list[float] = []
        self.dev = device()
        self.generator = torch.Generator().manual_seed(seed)
        # Its own global RNG states (dropout, mixup, RandAugment), swapped in while it trains:
        # trainers interleaved in one stage stay independent, and a checkpoint restores them.
        outer = _capture_rng()
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        self._rng = _capture_rng()
        _restore_rng(outer)
        self.notes: dict = {}  # what the caller decided between rounds (kept in the checkpoint)
        directory = _CHECKPOINTS.get() if resumable else None
        self.checkpoint = None if directory is None else directory / (re.sub(r"[^A-Za-z0-9_.-]+", "_", desc) + ".pt")
        self.model = bundle.model.to(self.dev).train()
        params = list(self.model.parameters()) + (list(hint.to(self.dev).parameters()) if hint is not None else [])
        self.optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=self.train.weight_decay)
        steps_per_epoch = math.ceil(len(data.train_y) / self.train.batch_size)
        total_steps = max(epochs * steps_per_epoch, 2)
        warmup = min(int(self.train.warmup_epochs * steps_per_epoch), total_steps - 1)
        self.schedule = CosineLRScheduler(self.optimizer, t_initial=total_steps - warmup, lr_min=lr * 0.01,
                                          warmup_t=warmup, warmup_lr_init=lr * 0.01, warmup_prefix=True,
                                          t_in_epochs=False)
        self.ema = ModelEmaV3(self.model, decay=self.train.ema_decay, use_warmup=True) if self.train.ema_decay else None
        self.augment = None
        if self.train.randaugment:
            from timm.data.auto_augment import rand_augment_transform

            self.augment = SampleAugment(
                rand_augment_transform(self.train.randaugment, {"img_mean": (124, 116, 104)}), seed)
        self.mix = None
        if self.train.mixup > 0 or self.train.cutmix > 0:
            self.mix = Mixup(mixup_alpha=self.train.mixup, cutmix_alpha=self.train.cutmix,
                             label_smoothing=self.train.label_smoothing, num_classes=data.num_classes)
        if self.checkpoint is not None and self.checkpoint.is_file():
            self._resume()
        elif self.checkpoint is not None and distributed.is_leader():  # before an epoch is spent on it
            disk.ensure_free(self.checkpoint.parent, 2 * _checkpoint_bytes(self.model, self.ema, self.hint),
                             f"{self.desc}'s epoch checkpoints")
        # Followers build theirs now, so every rank computes the teacher's outputs at once
        # (rank 0 does not wait for theirs at the first collective).
        distributed.send(("new", id(self), (spec, self.state())))
        self.cached = None
        started = time.perf_counter()
        if teacher is not None and cache_teacher and self.train.deterministic_inputs:
            self.cached = teacher.precompute(data.train_x, workers=data.workers)
        self.precompute_seconds = time.perf_counter() - started

    def state(self) -> dict:
        """Everything the next epoch depends on."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(), "generator": self.generator.get_state(),
                "rng": _rng_for_storage(self._rng), "epoch": self.epoch, "step": self.step,
                "epoch_seconds": self.epoch_seconds, "notes": self.notes,
                "ema": None if self.ema is None else self.ema.module.state_dict(),
                "hint": None if self.hint is None else self.hint.state_dict()}

    def load_state(self, state: dict) -> None:
        """Continue from `state` (a checkpoint, or rank 0's trainer on a follower)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            self.ema.module.load_state_dict(state["ema"])
        if self.hint is not None:
            self.hint.load_state_dict(state["hint"])
        self.schedule.load_state_dict(state["schedule"])
        self.generator.set_state(state["generator"].cpu())
        self._rng = _rng_from_storage(state["rng"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.epoch_seconds, self.notes = list(state["epoch_seconds"]), state["notes"]
        self.model.cpu().eval()

    def save(self) -> None:
        """Checkpoint everything the next epoch depends on (atomically), when checkpointing
        (rank 0 only: the followers' state is the same)."""
        if self.checkpoint is None or not distributed.is_leader():
            return
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        disk.save_torch(self.state(), self.checkpoint)

    def _resume(self) -> None:
        try:
            state = torch.load(self.checkpoint, map_location=self.dev, weights_only=True)
            self.load_state(state)
        except Exception as e:  # another shape (pruning went another way), a truncated file
            console.print(f"  [yellow]{self.desc}: checkpoint {self.checkpoint.name} does not fit ({type(e).__name__});"
                          " starting this loop over")
            self.checkpoint.unlink(missing_ok=True)
            return
        console.print(f"  {self.desc}: resuming at epoch {self.epoch}/{self.epochs}")

    def train_until(self, epoch: int) -> None:
        """Train on until `epoch` (of the schedule's `epochs`) is finished (under torchrun,
        on every rank: each trains on its share of every batch)."""
        distributed.send(("train_until", id(self), epoch))
        epoch = min(epoch, self.epochs)
        if epoch <= self.epoch:
            return
        self.model.to(self.dev).train()
        if self.train.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.step_module = _Step(self.model, self.hint)
        if distributed.world()[1] > 1:  # gradients averaged across the ranks, buffers from rank 0
            from torch.nn.parallel import DistributedDataParallel

            self.step_module = DistributedDataParallel(
                self.step_module, device_ids=[self.dev.index] if self.dev.type == "cuda" else None)
        if self.teacher is not None and self.cached is None:
            self.teacher.to(self.dev)
        outer = _capture_rng()
        _restore_rng(self._rng)
        try:
            with epoch_bar() as bar:
                task = bar.add_task(self.desc, total=self.epochs, completed=self.epoch, status="")
                while self.epoch < epoch:
                    loss = self._one_epoch()
                    self.epoch += 1
                    self._check_weights()
                    self._rng = _capture_rng()
                    self.save()
                    bar.update(task, advance=1, status=f"loss {loss:.3f}")
        finally:
            self._rng = _capture_rng()
            _restore_rng(outer)
        if self.teacher is not None:
            self.teacher.to(torch.device("cpu"))
        self.model.cpu().eval().to(memory_format=torch.contiguous_format)  # what export and evaluation expect

    def _diverged(self, what: str):
        if self.teacher is not None:
            self.teacher.to(torch.device("cpu"))
        self.model.cpu()
        raise TrainingDiverged(
            f"{self.desc}: training diverged at epoch {self.epoch + 1}/{self.epochs}, step {self.step + 1}: {what}; "
            f"the likely cause is the learning rate: lower {self.lr_key} (now {self.lr:g}) or add warm-up "
            "(train.warmup_epochs)")

    def _check_weights(self) -> None:
        for name, p in self.model.named_parameters():
            if not torch.isfinite(p).all():
                self.epoch -= 1  # name the epoch that produced them
                self._diverged(f"weight {name} is no longer finite")

    def current(self) -> nn.Module:
        """The model as it stands (the EMA weights when EMA is on), for evaluation."""
        return self.ema.module if self.ema is not None else self.model

    def finish(self) -> dict:
        """Puts the result (EMA weights if any) into `bundle.model`; returns timing figures."""
        distributed.send(("drop", id(self), None))
        if self.ema is not None:
            self.model.load_state_dict(self.ema.module.state_dict())
        self.model.cpu().eval()
        return {"epoch_seconds": self.epoch_seconds, "teacher_precompute_seconds": self.precompute_seconds}

    def _epoch_batches(self) -> list[torch.Tensor]:
        """This epoch's batches of training-image indices (all ranks'), in training order."""
        ranks = distributed.world()[1]
        order = self.data.epoch_order(self.generator)
        out = []
        for start in range(0, len(order), self.train.batch_size):
            idx = order[start : start + self.train.batch_size]
            if self.mix is not None:  # timm's mixup pairs images within each rank's share
                idx = idx[: len(idx) - len(idx) % (2 * ranks)]
            if len(idx) >= 2 * ranks:  # BatchNorm cannot train on a batch of one
                out.append(idx)
        return out

    def _autocast(self) -> torch.autocast:
        """bf16 autocast of a forward pass when `[train] autocast` asks for it, else nothing."""
        return torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=self.train.autocast == "bf16")

    def _one_epoch(self) -> float:
        train, kd, dev, model = self.train, self.kd, self.dev, self.model
        epoch_start = time.perf_counter()
        total, seen = 0.0, 0
        rank, ranks = distributed.world()
        whole = self._epoch_batches()
        shares = [distributed.shard(idx) for idx in whole]  # this rank's share of each batch
        # Streamed images are decoded (and RandAugment applied) by worker processes, a few
        # batches ahead of this loop.
        augment = None if self.augment is None else self.augment.for_epoch(self.epoch)
        read = batches(self.data.train_x, shares, self.data.workers, augment)
        for batch, idx, images in zip(whole, shares, read):
            images = images.to(dev).float().div_(255.0)
            if train.translate > 0 or train.hflip:
                images = shift_and_flip(images, train.translate, train.hflip, self.generator,
                                        None if ranks == 1 else (len(batch), rank, ranks))
            y = self.data.train_y[idx].to(dev)
            if self.mix is not None:
                images, y = self.mix(images, y)  # soft targets, label smoothing included
            with self._autocast():
                x = model_input(self.bundle, images)
                out, hinted = self.step_module(x.contiguous(memory_format=torch.channels_last)
                                               if train.channels_last else x)
            out = out.float()
            hinted = None if hinted is None else hinted.float()
            if y.dim() == 2:
                hard = F.cross_entropy(out, y)
            else:
                hard = F.cross_entropy(out, y, label_smoothing=train.label_smoothing)
            loss = hard
            if self.teacher is not None:
                if self.cached is not None:
                    t_logits = self.cached[0][idx].to(dev).float()
                    t_hint = self.cached[1][idx].to(dev).float() if self.cached[1] is not None else None
                else:
                    with self._autocast():
                        t_logits, t_hint = self.teacher(images)
                t = kd.temperature
                soft = F.kl_div(F.log_softmax(out / t, 1), F.log_softmax(t_logits / t, 1),
                                reduction="batchmean", log_target=True) * t * t
                loss = (1.0 - kd.alpha) * hard + kd.alpha * soft
                if self.hint is not None:
                    loss = loss + kd.feature_weight * F.mse_loss(hinted, t_hint)
            if not torch.isfinite(loss):
                self._diverged(f"the loss is {float(loss)}")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.step += 1
            self.schedule.step_update(self.step)
            if self.ema is not None:
                self.ema.update(model, step=self.step)
            total, seen = total + float(loss.detach()) * len(idx), seen + len(idx)
        self.epoch_seconds.append(time.perf_counter() - epoch_start)
        return total / max(seen, 1)


def train_auto(trainer: Trainer, bundle: ModelBundle, data: Dataset, plan: Schedule,
               within_budget: Callable[[float], bool] | None = None) -> dict:
    """`trainer` on an auto schedule (stages/schedule.py), scored on `data`'s val split after
    every epoch; leaves the best epoch's weights in it and returns the schedule's record."""
    record = schedules.train_auto(trainer, plan, lambda: evaluate(
        dataclasses.replace(bundle, model=trainer.current()), data), within_budget)
    console.print(f"  {trainer.desc}: {record['epochs']} epochs, kept epoch {record['best_epoch']} "
                  f"({record['best_val_accuracy']:.2f}% val): {record['stopped']}")
    return record


def fit(bundle: ModelBundle, data: Dataset, epochs: int | Schedule, *, lr: float, seed: int, desc: str,
        train: TrainConfig | None = None, teacher: Teacher | None = None,
        hint: HintProjection | None = None, kd: DistillConfig | None = None,
        cache_teacher: bool = True, lr_key: str = "lr", resumable: bool = True,
        within_budget: Callable[[float], bool] | None = None) -> dict:
    """Train `bundle.model` in place for `epochs` (a count, or a Schedule: see
    stages/schedule.py; `within_budget(val accuracy)` lets an auto schedule stop a student
    as soon as it holds); returns timing figures and `schedule`, the record of how long it
    trained and why it stopped. TrainingDiverged (naming `lr_key`) on a non-finite loss or
    weights."""
    plan = epochs if isinstance(epochs, Schedule) else schedules.fixed(epochs)
    if plan.length <= 0:
        return {"schedule": schedules.fixed_record(plan)}
    trainer = Trainer(bundle, data, plan.length, lr=lr, seed=seed, desc=desc, train=train, teacher=teacher, hint=hint,
                      kd=kd, cache_teacher=cache_teacher, lr_key=lr_key, resumable=resumable)
    if plan.auto:
        record = train_auto(trainer, bundle, data, plan, within_budget)
    else:
        trainer.train_until(plan.length)
        record = schedules.fixed_record(plan)
    return {**trainer.finish(), "schedule": record}
