"""Stage `prune`: structured channel pruning (torch-pruning) to a MACs ratio or a latency on a
profile (estimated, or measured by the profile's runner), in one or more steps, each followed
by KD recovery; backs off a step that breaks the budget."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from edgekiln import gates as budget
from edgekiln import time_budget
from edgekiln.data import unlabelled
from edgekiln.data.dataset import Dataset
from edgekiln.errors import InputError
from edgekiln.progress import console
from edgekiln.stages.prune import PruneConfig, PruneSections
from edgekiln.stages.result import StageResult
from edgekiln.stages.prune.records import PruneRecord
from edgekiln.training.model_latency import MeasuredLatency
from edgekiln.targets.profiles import ProfileError, load_profile
from edgekiln.targets.runners import estimate
from edgekiln.training import distillation, evaluation, lr_range, modeling, schedule, trainer
from edgekiln.training.config import DistillConfig

_MAX_CHANNEL_RATIO = 0.9  # never remove more than this share of any layer's channels
_STEPS = 45  # granularity of the search for the MACs target


def preflight(config: PruneSections) -> None:
    """A latency target needs a profile whose cost model can estimate the pruned student, or,
    with `measure`, a runner that measures."""
    cfg: PruneConfig = config.prune
    if cfg.profile is None:
        return
    try:
        profile = load_profile(cfg.profile)
    except ProfileError as e:
        raise InputError(f"prune.profile: {e}") from None
    if cfg.measure and profile.runner.kind == "estimate":
        raise InputError(f"prune.measure: profile {profile.name!r} has no runner that measures (its runner is "
                         "estimate); drop measure to estimate each step, or pick a host, adb or ssh profile")
    if not cfg.measure and profile.estimate is None:
        raise InputError(f"prune.profile: profile {profile.name!r} has no [estimate] reference table, "
                         "which latency-targeted pruning needs to estimate each step (or set "
                         "prune.measure = true to time each step on its runner)")


def kept_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Layers whose output channels must not be pruned: the classifier (its outputs are the
    classes) and every projection inside an attention module. torch-pruning skips any channel
    group that contains one of them, so attention keeps its heads and head size and the
    transformer's residual width stays whole, while convolutions and MLP hidden widths are
    pruned. (Pruning a MobileViT as-is breaks the reshape to [B, N, 3, heads, head_dim].)"""
    kept = []
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    if isinstance(classifier, torch.nn.Module):
        kept.append(classifier)
    for module in model.modules():
        if "Attention" in type(module).__name__:
            kept += [m for m in module.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    return kept


def _importance(kind: str):
    import torch_pruning as tp

    if kind == "taylor":
        return tp.importance.GroupTaylorImportance()
    return tp.importance.GroupMagnitudeImportance(p=2)


def taylor_gradients(bundle, data: Dataset, batches: int = 4, batch_size: int = 64):
    """A callable filling .grad with the cross-entropy gradient of a few training batches
    (Taylor importance is |weight x gradient|)."""
    order = torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(data.seed))
    chosen = order[: batches * batch_size]
    images = data.train_x[chosen]  # read once (streamed shards: one pass over those that hold them)

    def fill() -> None:
        model = bundle.model
        model.eval()  # BatchNorm on its running statistics: these passes must not update them
        model.zero_grad()
        for i in range(0, len(chosen), batch_size):
            x = evaluation.model_input(bundle, images[i : i + batch_size])
            labels = data.train_y[chosen[i : i + batch_size]].to(x.device)
            torch.nn.functional.cross_entropy(model(x), labels).backward()
    return fill


def prune_until(model: torch.nn.Module, input_size: int, reached, importance: str = "magnitude",
                gradients=None) -> bool:
    """Prune `model` in place, uniformly per layer, in small steps until `reached(model)` is
    true. Taylor importance calls `gradients()` before each step. Returns whether the target
    was reached before no layer could give up more channels."""
    import torch_pruning as tp

    model.cpu().eval()
    if reached(model):
        return True
    pruner = tp.pruner.MetaPruner(
        model, torch.randn(1, 3, input_size, input_size), importance=_importance(importance),
        pruning_ratio=_MAX_CHANNEL_RATIO, iterative_steps=_STEPS, ignored_layers=kept_layers(model))
    try:
        for _ in range(_STEPS):
            if importance == "taylor":
                gradients()
            pruner.step()
            if reached(model):
                return True
        return False
    finally:
        model.zero_grad(set_to_none=True)


def prune_to_macs(model: torch.nn.Module, input_size: int, ratio: float) -> tuple[int, int]:
    """Prune `model` in place by L2 magnitude until its MACs are at most `ratio` of the
    original. Returns (MACs before, MACs after)."""
    before = modeling.macs(model, input_size)
    if ratio < 1.0:
        prune_until(model, input_size, lambda m: modeling.macs(m, input_size) <= ratio * before)
    return int(before), int(modeling.macs(model, input_size))


# Rounds of prune-then-measure per step: a measurement is a conversion and a timing run, so
# the search scales MACs by the measured shortfall instead of measuring every increment.
_MEASURE_ROUNDS = 4


def _prune_to_measured(model: torch.nn.Module, size: int, latency: MeasuredLatency, goal: float,
                       importance: str, gradients) -> str | None:
    """Prune until the measured latency is at most `goal`: each round scales the MACs by the
    shortfall (latency is roughly MACs plus a fixed cost, so this undershoots and repeats).
    Returns None when the goal is met, else why not."""
    for _ in range(_MEASURE_ROUNDS):
        now = latency(model)
        if now <= goal:
            return None
        macs_goal = modeling.macs(model, size) * min(goal / now, 0.97)
        if not prune_until(model, size, lambda m: modeling.macs(m, size) <= macs_goal, importance, gradients):
            return None if latency(model) <= goal else _NO_MORE
    if latency(model) <= goal:
        return None
    return (f"target not reached: still {latency(model):.3f} ms measured against {goal:.3f} after "
            f"{_MEASURE_ROUNDS} rounds of pruning and measuring")


_NO_MORE = "target not reached: no layer can give up more"


def run(data: Dataset, config: PruneSections, workdir: Path, *, previous: StageResult,
        reference: StageResult) -> StageResult:
    cfg: PruneConfig = config.prune
    kd: DistillConfig = config.distill
    distilled = previous
    # A copy: the model before pruning may be the reference itself (a run that prunes the
    # given model), which recovery distils from and later stages measure against.
    student = copy.deepcopy(distilled.bundle)
    size = student.input_size
    latency = None
    if cfg.latency_ms is not None:
        latency = (MeasuredLatency(cfg.profile, data, student, workdir) if cfg.measure
                   else estimate.ProfileEstimator(cfg.profile, size))
    # Recovery uses logit KD only: a hint projection would start untrained here.
    teacher = distillation.Teacher(reference.bundles)
    macs_before = modeling.macs(student.model, size)
    start_latency = latency(student.model) if latency else None

    def record(step: int, accuracy: float, note: str = "") -> dict:
        model = student.model
        return {"step": step, "params": modeling.params(model), "macs": modeling.macs(model, size),
                "latency_ms": latency(model) if latency else None,
                "latency_source": latency.source if latency else None, "accuracy": accuracy, "note": note}

    gradients = taylor_gradients(student, data) if cfg.importance == "taylor" else None
    recovery = schedule.from_config(cfg, config.train, "finetune_epochs")
    training = unlabelled.joined(data)  # recovery's images: the labelled ones, then any unlabelled ones
    steps = [record(0, distilled.accuracy, f"before pruning ({distilled.stage})")]
    stopped = None
    for k in range(1, cfg.steps + 1):
        if k > 1 and (why := time_budget.expired()) is not None:  # the steps so far held: the last one ships
            time_budget.cut(f"pruning after step {k - 1} of {cfg.steps}")
            stopped = f"{why}: kept step {k - 1} of {cfg.steps}"
            break
        before_step = copy.deepcopy(student.model)
        share = k / cfg.steps
        if latency:
            goal = start_latency - share * (start_latency - cfg.latency_ms)
            done = lambda m: latency(m) <= goal + 1e-9  # noqa: E731
        else:
            goal = macs_before * (1 - share * (1 - cfg.macs_ratio))
            done = lambda m: modeling.macs(m, size) <= goal  # noqa: E731
        if cfg.measure:  # a measurement per pruning increment would cost a conversion each: rounds instead
            missed = _prune_to_measured(student.model, size, latency, goal, cfg.importance, gradients)
        else:
            missed = None if prune_until(student.model, size, done, cfg.importance, gradients) else _NO_MORE
        train = config.train
        holds = budget.holds_with_margin(train.within_budget_margin, "prune", (distilled.stage, distilled.accuracy),
                                         reference.accuracy, config.budget)
        # Auto recovery goes on until the step is back within budget (with the margin), else
        # until val stops improving or the cap: a step is undone only after that.
        lr, found = cfg.lr, None
        if lr == "auto":  # this step's pruned student, on the loss its recovery trains with
            found = lr_range.find(student, training, train, seed=data.seed + k - 1, teacher=teacher, kd=kd,
                                  desc=f"prune step {k}/{cfg.steps}")
            lr = found["lr"]
        fitted = trainer.fit(student, training, recovery, lr=lr, seed=data.seed + k - 1,
                              desc=f"prune step {k}/{cfg.steps}: recovery fine-tune", train=train,
                              teacher=teacher, kd=kd, lr_key="prune.lr",
                              within_budget=holds if recovery.auto and train.stop_when_within_budget else None)
        accuracy = evaluation.evaluate(student, data)
        breach = budget.breach(accuracy, "prune", (distilled.stage, distilled.accuracy), reference.accuracy,
                                config.budget)
        steps.append(record(k, accuracy, missed or ""))
        steps[-1]["recovery"] = fitted["schedule"]
        if fitted.get("teacher_outputs") is not None:  # computed once for every step and distillation, or re-used
            steps[-1]["teacher_outputs"] = fitted["teacher_outputs"]
        if found is not None:
            steps[-1]["lr"] = found
        console.print(f"  step {k}/{cfg.steps}: MACs {steps[-1]['macs'] / 1e6:.2f}M"
                      + (f", {steps[-1]['latency_ms']:.3f} ms ({latency.source})" if latency else "")
                      + f", accuracy {accuracy:.2f}%" + (f" [red]{breach}" if breach else ""))
        if breach and cfg.steps > 1:  # the last step that held ships: with step 1, the distilled student
            student.model = before_step
            steps[-1]["note"] = f"undone: {breach}"
            stopped = (f"backed off to step {k - 1}: step {k} broke the budget ({breach})" if k > 1 else
                       f"backed off to the distilled student (no pruning): step 1 broke the budget ({breach})")
            break
        if breach:
            stopped = f"step 1 already breaks the budget ({breach}); nothing to back off to"
            break
        # A step whose measured goal was missed after its rounds may be noise: later steps aim
        # lower and go on from here. Only the last step's miss, or a model that cannot give up
        # more channels, ends the search.
        if missed == _NO_MORE or (missed and k == cfg.steps):
            stopped = f"stopped at step {k}: the target cannot be reached ({missed.removeprefix('target not reached: ')})"
            break
    final = next(s for s in reversed(steps) if not s["note"].startswith("undone"))
    stopped = stopped or ("reached the latency target" if latency else "reached the MACs target")
    console.print(f"  MACs {macs_before / 1e6:.2f}M -> {final['macs'] / 1e6:.2f}M "
                  f"({final['macs'] / macs_before:.2f} of the student); {stopped}")
    return StageResult.with_model(final["accuracy"], student, params=final["params"], macs=final["macs"], figures=PruneRecord(
        macs_before=macs_before, macs_ratio=final["macs"] / macs_before, steps=steps, stopped=stopped,
        target=({"latency_ms": cfg.latency_ms, "profile": cfg.profile, "measured": cfg.measure} if latency
                else {"macs_ratio": cfg.macs_ratio}),
        importance=cfg.importance,
        # Recovery distils from the reference: the teacher, or the given model itself.
        recovery_distils_from=reference.stage, self_distillation=reference.stage == distilled.stage))
