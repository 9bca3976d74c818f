"""Stage `distill`: knowledge distillation from the selected teacher(s) into a mobile student,
or into the best of several candidate students found by successive halving."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from edgekiln import gates as budgets
from edgekiln.data import unlabelled
from edgekiln.data.dataset import Dataset
from edgekiln.errors import InputError
from edgekiln.progress import console
from edgekiln.stages.distill import StudentConfig
from edgekiln.stages.result import StageResult
from edgekiln.training import distillation, evaluation, lr_range, modeling, schedule, trainer
from edgekiln.training.config import DistillConfig


def preflight(config: dict) -> None:
    """Fail fast on a student architecture timm does not know, or a profile that cannot rank."""
    cfg: StudentConfig = config["student"]
    for i, arch in enumerate(cfg.candidates):
        key = "student.arch" if isinstance(cfg.arch, str) else f"student.arch[{i}]"
        modeling.check_known_arch(key, arch)
        if cfg.pretrained and not arch.startswith("hf-hub:"):
            import timm

            if not timm.list_pretrained(arch):
                raise InputError(f"{key}: timm has no pretrained weights for {arch!r} (student.pretrained = true)")
    if cfg.profile is not None:
        from edgekiln.targets.profiles import ProfileError, load_profile

        try:
            profile = load_profile(cfg.profile)
        except ProfileError as e:
            raise InputError(f"student.profile: {e}") from None
        if profile.estimate is None:
            raise InputError(f"student.profile: profile {profile.name!r} has no [estimate] reference table, "
                             "which select = 'fastest' needs to rank the candidates before converting them")


def halving_schedule(candidates: int, epochs: int) -> list[int]:
    """Epochs every survivor has trained after each round of successive halving: the last
    round reaches `epochs`, each earlier one half the next (at least 1)."""
    rounds = math.ceil(math.log2(candidates)) if candidates > 1 else 0
    return [max(1, round(epochs / 2 ** (rounds - r))) for r in range(rounds)] + [epochs]


def rank_key(record: dict, select: str, within: bool) -> tuple:
    """Sort key (higher is better) of a candidate under `select`: within budget first, then
    by the rule; outside the budget, by accuracy (the fallback)."""
    accuracy = record["accuracy"]
    if not within or select == "accuracy":
        return (within, accuracy, -record["params"])
    cost = record["int8_bytes"] if select == "smallest" else record["latency_ms"]
    return (within, -cost, accuracy)


class _Candidate:
    """One student candidate under training, with its record for the manifest."""

    def __init__(self, arch: str, cfg: StudentConfig, data: Dataset, teachers, kd, train, estimator,
                 epochs: int, training: Dataset):
        model = modeling.create(arch, data.num_classes, pretrained=cfg.pretrained, seed=data.seed,
                                image_size=data.image_size)
        self.bundle = modeling.bundle(arch, model, data.num_classes, data.image_size,
                                      source="distilled from " + " + ".join(t.source for t in teachers))
        teacher, hint = distillation.hinted_teacher(teachers, self.bundle, kd)
        found = None
        if cfg.lr == "auto":  # on the images and with the loss the loop trains with (the hint aside)
            found = lr_range.find(self.bundle, training, train, seed=data.seed, teacher=teacher, kd=kd,
                                  desc=f"distill {arch}")
            console.print(f"  distill {arch}: learning rate {found['lr']:.3g} ({found['why']})")
        lr = cfg.lr if found is None else found["lr"]
        self.trainer = trainer.Trainer(self.bundle, training, epochs, lr=lr, seed=data.seed,
                                        desc=f"distill {arch}", train=train, teacher=teacher, hint=hint, kd=kd,
                                        lr_key="student.lr")
        params = modeling.params(model)
        self.record = {"name": arch, "params": params, "macs": modeling.macs(model, data.image_size),
                       # INT8 weights are one byte each: the artifact's size, less a few float scales
                       "int8_bytes": params,
                       "latency_ms": None if estimator is None else estimator(model),
                       "accuracy": None, "epochs_trained": 0, "rounds": [], "chosen": False}
        if found is not None:
            self.record["lr"] = found

    def train_to(self, epochs: int, data: Dataset) -> float:
        self.trainer.train_until(epochs)
        scored = self.trainer.notes.setdefault("val_accuracy_at", {})
        if epochs not in scored:  # a resumed search re-uses each round's score, so it ranks as before
            current = dataclasses.replace(self.bundle, model=self.trainer.current())
            scored[epochs] = evaluation.accuracy(evaluation.logits(current, data.val_x), data.val_y)
            self.trainer.save()
        accuracy = scored[epochs]
        self.record.update(accuracy=accuracy, epochs_trained=epochs)
        self.record["rounds"].append({"epochs": epochs, "accuracy": accuracy})
        return accuracy

    def train_auto(self, plan: schedule.Schedule, data: Dataset, within_budget) -> float:
        """Train on from where the search left it until `plan` stops it (training/schedule.py),
        keeping the best epoch's weights."""
        record = trainer.train_auto(self.trainer, self.bundle, data, plan, within_budget)
        accuracy = record["best_val_accuracy"]  # the kept weights' val accuracy
        self.record.update(accuracy=accuracy, epochs_trained=record["epochs"], schedule=record)
        self.record["rounds"].append({"epochs": record["epochs"], "accuracy": accuracy, "auto": True})
        return accuracy


def run(data: Dataset, config: dict, workdir: Path, *, reference: StageResult) -> StageResult:
    cfg: StudentConfig = config["student"]
    kd: DistillConfig = config["distill"]
    teachers = reference.bundles
    teacher_accuracy = reference.accuracy
    estimator = None
    if cfg.select == "fastest" and len(cfg.candidates) > 1:
        from edgekiln.targets.runners.estimate import ProfileEstimator

        estimator = ProfileEstimator(cfg.profile, data.image_size)
    train = config["train"]
    plan = schedule.from_config(cfg, train)
    training = unlabelled.joined(data)  # the labelled images, then any unlabelled ones: one copy for all
    candidates = [_Candidate(arch, cfg, data, teachers, kd, train, estimator, plan.length, training)
                  for arch in cfg.candidates]
    rounds = halving_schedule(len(candidates), plan.length)
    alive = list(candidates)
    total = config.get("budget")
    holds = budgets.holds_with_margin(train.within_budget_margin, "distill", (reference.stage, teacher_accuracy),
                                      teacher_accuracy, total)
    for round_index, epochs in enumerate(rounds):
        if len(alive) == 1 and plan.auto:  # the last survivor trains on until its schedule stops it
            alive[0].train_auto(plan, data, holds if train.stop_when_within_budget else None)
            break
        for c in alive:
            c.train_to(epochs, data)
        if len(alive) == 1:
            break
        keep = math.ceil(len(alive) / 2)
        ranked = sorted(alive, key=lambda c: _key(c.record, cfg.select, teacher_accuracy, total), reverse=True)
        for c in ranked[keep:]:
            c.record["why"] = (f"dropped after round {round_index + 1} ({epochs} epochs): ranked "
                               f"{ranked.index(c) + 1} of {len(ranked)} by {_rule(cfg.select)}")
        alive = ranked[:keep]
        console.print(f"  round {round_index + 1} ({epochs} epochs): "
                      + ", ".join(f"{c.record['name']} {c.record['accuracy']:.2f}%" for c in ranked)
                      + f"; {', '.join(c.record['name'] for c in alive)} go on")
    winner = alive[0]
    winner.trainer.finish()
    winner.record["chosen"] = True
    if data.unlabelled is not None:  # how many unlabelled images the chosen student's KD term saw
        winner.record["unlabelled_seen"] = winner.trainer.notes.get("unlabelled_seen", 0)
    once = winner.trainer.teacher_outputs
    winner.record["teacher_outputs"] = {  # what the teacher cost: once per image, or on every step's view
        "computed": ("once per image (the inputs are the same every epoch)" if once and not once["reused"]
                     else "re-used: computed once per image by an earlier loop or run on this teacher and these "
                          "images" if once else "on every step, on the view the student sees (augmented inputs)"),
        "precompute_seconds": round(winner.trainer.precompute_seconds, 2) if once else None,
        "per_step_seconds": None if once else round(winner.trainer.notes.get("teacher_step_seconds", 0.0), 2),
        **({"stored_as": once["entry"]} if once and once["stored"] else {})}
    within = budgets.within_total(winner.record["accuracy"], teacher_accuracy, total)
    if len(candidates) == 1:
        winner.record["why"] = "the only candidate"
    elif within:
        winner.record["why"] = f"{_rule(cfg.select)} among those within budget.max_drop_total of the teacher"
    else:
        winner.record["why"] = (f"no candidate within budget.max_drop_total of the teacher "
                                f"({teacher_accuracy:.2f}%): the most accurate")
    model = winner.bundle.model
    spent = sum(c.record["epochs_trained"] for c in candidates)
    return StageResult.with_model(winner.record["accuracy"], winner.bundle, metrics={
        "arch": winner.record["name"], "params": modeling.params(model),
        "macs": modeling.macs(model, winner.bundle.input_size), "feature_loss": kd.feature_loss,
        "student": {"name": winner.record["name"], "select": cfg.select, "profile": cfg.profile,
                    "schedule": rounds, "epochs_spent": spent, "epochs_if_each_trained_fully":
                        plan.length * len(candidates), "within_budget": within,
                    "auto": winner.record.get("schedule"), "unlabelled": data.unlabelled,
                    "candidates": [c.record for c in candidates]}})


def _key(record: dict, select: str, teacher: float, budget) -> tuple:
    return rank_key(record, select, budgets.within_total(record["accuracy"], teacher, budget))


def _rule(select: str) -> str:
    return {"accuracy": "accuracy", "smallest": "fewest INT8 bytes", "fastest": "estimated INT8 latency"}[select]
