"""The training loop every stage uses: supervised fine-tuning and distillation.

One recipe (`[train]`) for every loop: AdamW, cosine schedule with linear warm-up, label
smoothing, optional EMA of the weights and timm augmentation (RandAugment, mixup/cutmix).
Distillation (`[distill]`) adds logit KD from one or more teachers and, optionally, a
FitNets hint loss (training/distillation.py). A Trainer can stop after any epoch and go on
later, from a checkpoint (training/state.py) or on torchrun's other ranks
(training/distributed.py).
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgekiln import time_budget
from edgekiln.data.dataset import Dataset
from edgekiln.data.image_files import SampleAugment, batches
from edgekiln.data.unlabelled import NO_LABEL
from edgekiln.errors import TrainingDiverged
from edgekiln.progress import console, epoch_bar
from edgekiln.system import disk
from edgekiln.training import distributed, evaluation
from edgekiln.training import schedule as schedules
from edgekiln.training import teacher_outputs
from edgekiln.training.augment import shift_and_flip
from edgekiln.training.config import DistillConfig, TrainConfig
from edgekiln.training.distillation import HintProjection, Teacher, kd_loss
from edgekiln.training.evaluation import device, features_and_logits, model_input
from edgekiln.training.modeling import ModelBundle
from edgekiln.training.schedule import Schedule
from edgekiln.training.state import (
    capture_rng,
    checkpoint_bytes,
    checkpoint_dir,
    restore_rng,
    rng_for_storage,
    rng_from_storage,
)


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

        # What a follower rank needs to build the same trainer (see training/distributed.py).
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
        outer = capture_rng()
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        self._rng = capture_rng()
        restore_rng(outer)
        self.notes: dict = {}  # what the caller decided between rounds (kept in the checkpoint)
        directory = checkpoint_dir() if resumable else None
        self.checkpoint = None if directory is None else directory / (re.sub(r"[^A-Za-z0-9_.-]+", "_", desc) + ".pt")
        self.model = bundle.model.to(self.dev).train()
        params = list(self.model.parameters()) + (list(hint.to(self.dev).parameters()) if hint is not None else [])
        self.optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=self.train.weight_decay)
        self.steps_per_epoch = steps_per_epoch = math.ceil(len(data.train_y) / self.train.batch_size)
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
            disk.ensure_free(self.checkpoint.parent, 2 * checkpoint_bytes(self.model, self.ema, self.hint),
                             f"{self.desc}'s epoch checkpoints")
        # Followers build theirs now, so every rank computes the teacher's outputs at once
        # (rank 0 does not wait for theirs at the first collective).
        distributed.send(("new", id(self), (spec, self.state())))
        self.cached = None
        self.teacher_outputs = None  # computed once, or re-used from an earlier loop or run
        started = time.perf_counter()
        if teacher is not None and cache_teacher and self.train.deterministic_inputs:
            self.cached, self.teacher_outputs = teacher_outputs.outputs(teacher, data, workers=data.workers)
        self.precompute_seconds = time.perf_counter() - started

    def state(self) -> dict:
        """Everything the next epoch depends on."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(), "generator": self.generator.get_state(),
                "rng": rng_for_storage(self._rng), "epoch": self.epoch, "step": self.step,
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
        self._rng = rng_from_storage(state["rng"])
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
        outer = capture_rng()
        restore_rng(self._rng)
        try:
            with epoch_bar() as bar:
                task = bar.add_task(self.desc, total=self.epochs, completed=self.epoch, status="")
                while self.epoch < epoch:
                    loss = self._one_epoch()
                    self.epoch += 1
                    self._check_weights()
                    self._rng = capture_rng()
                    self.save()
                    bar.update(task, advance=1, status=f"loss {loss:.3f}" + time_budget.progress_note())
        finally:
            self._rng = capture_rng()
            restore_rng(outer)
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
        return {"epoch_seconds": self.epoch_seconds, "teacher_precompute_seconds": self.precompute_seconds,
                "teacher_outputs": self.teacher_outputs}

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
            hard = hard_loss(out, y, train.label_smoothing)
            if y.dim() == 1 and self.teacher is not None:  # unlabelled images learn from the teacher alone
                unlabelled = int((y == NO_LABEL).sum())
                if unlabelled:
                    self.notes["unlabelled_seen"] = self.notes.get("unlabelled_seen", 0) + unlabelled
            loss = hard
            if self.teacher is not None:
                if self.cached is not None:
                    t_logits = self.cached[0][idx].to(dev).float()
                    t_hint = self.cached[1][idx].to(dev).float() if self.cached[1] is not None else None
                else:  # on this step's view: its cost is the stage's to record (a device sync on CUDA)
                    started = time.perf_counter()
                    with self._autocast():
                        t_logits, t_hint = self.teacher(images)
                    if dev.type == "cuda":
                        torch.cuda.synchronize(dev)
                    self.notes["teacher_step_seconds"] = (self.notes.get("teacher_step_seconds", 0.0)
                                                          + time.perf_counter() - started)
                loss = kd_loss(out, hard, t_logits, kd)
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


def hard_loss(out: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy against the labels: soft targets (mixup) as they are; of class labels,
    only the labelled images' (an unlabelled one, NO_LABEL, adds nothing: its only signal is
    the teacher's); a batch without a labelled image has no hard loss."""
    if y.dim() == 2:
        return F.cross_entropy(out, y)
    labelled = y != NO_LABEL
    if not bool(labelled.all()):
        if not bool(labelled.any()):
            return out.sum() * 0.0  # keeps the graph: the KD term still trains
        out, y = out[labelled], y[labelled]
    return F.cross_entropy(out, y, label_smoothing=label_smoothing)


def train_auto(trainer: Trainer, bundle: ModelBundle, data: Dataset, plan: Schedule,
               within_budget: Callable[[float], bool] | None = None, until: int | None = None) -> dict:
    """`trainer` on an auto schedule (training/schedule.py), scored on `data`'s val split after
    every epoch; leaves the best epoch's weights in it and returns the schedule's record.
    `until`: a search's round, which may end at that epoch before the schedule stops it."""
    record = schedules.train_auto(trainer, plan, lambda: evaluation.evaluate(
        dataclasses.replace(bundle, model=trainer.current()), data), within_budget, until=until)
    if record["stopped"] is not None:  # a round that reached `until` goes on later: nothing to say yet
        console.print(f"  {trainer.desc}: {record['epochs']} epochs, kept epoch {record['best_epoch']} "
                      f"({record['best_val_accuracy']:.2f}% val): {record['stopped']}")
    return record


def fit(bundle: ModelBundle, data: Dataset, epochs: int | Schedule, *, lr: float, seed: int, desc: str,
        train: TrainConfig | None = None, teacher: Teacher | None = None,
        hint: HintProjection | None = None, kd: DistillConfig | None = None,
        cache_teacher: bool = True, lr_key: str = "lr", resumable: bool = True,
        within_budget: Callable[[float], bool] | None = None) -> dict:
    """Train `bundle.model` in place for `epochs` (a count, or a Schedule: see
    training/schedule.py; `within_budget(val accuracy)` lets an auto schedule stop a student
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
