"""Stage `distill`: knowledge distillation from the selected teacher(s) into a mobile student,
or into the best of several candidate students found by successive halving."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from pathlib import Path

from edgekiln import gates as budgets
from edgekiln import time_budget
from edgekiln.data import unlabelled
from edgekiln.data.dataset import Dataset
from edgekiln.errors import InputError
from edgekiln.progress import console
from edgekiln.stages.distill import DistillSections, StudentConfig
from edgekiln.stages.distill.records import DistillFigures, MissedBudget, StudentRecord
from edgekiln.stages.result import Fork, StageResult
from edgekiln.system.records import dumped
from edgekiln.training import distillation, evaluation, lr_range, modeling, schedule, trainer
from edgekiln.training.config import DistillConfig


def preflight(config: DistillSections) -> None:
    """Fail fast on a student architecture timm does not know, or a profile that cannot rank."""
    cfg: StudentConfig = config.student
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


def auto_round_caps(candidates: int, plan: schedule.Schedule) -> list[int]:
    """The epochs each survivor has trained by the end of each round of an auto search: the
    first round one patience window (at least 2 epochs), each later round twice the one
    before, within the cap. A round is an auto loop of its own: a candidate stops early in it
    on the same patience as a single auto loop. The survivor then trains on from its last
    round's weights until its schedule stops it, so the search costs the winner's own epochs
    plus the losers' rounds: with 3 candidates, one round and two (patience x 3 epochs), at
    most the winner's own when it trains 3 patience windows or more."""
    rounds = math.ceil(math.log2(candidates)) if candidates > 1 else 0
    first = max(2, plan.patience)
    return [min(plan.max_epochs, first * 2 ** r) for r in range(rounds)]


def hopeless(record: dict, teacher: float, budget, plan: schedule.Schedule) -> str | None:
    """Why an auto-search candidate cannot reach the accuracy budget before its cap, or None:
    it stopped on patience below the budget (a plateau), or even its best recent rate of
    gain (per epoch, over its last patience window), kept up to max_epochs, falls short. A
    learning curve flattens, so the straight line is the most it could reach."""
    floor = budgets.lowest_within_total(teacher, budget)
    best = record["accuracy"]
    if floor is None or best is None or best >= floor:
        return None
    auto = record.get("round_schedule") or {}
    if auto.get("stopped") and not auto.get("cut_by_time_budget"):  # a plateau, not the clock
        return (f"stopped in its round on patience at {best:.2f}% val ({auto['stopped']}), {floor - best:.2f} points "
                f"short of the budget ({floor:.2f}%)")
    history = auto.get("val_history") or []
    window = history[-(plan.patience + 1):]
    if len(window) >= 2:
        rate = max(0.0, (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0]))
        reachable = best + rate * (plan.max_epochs - window[-1][0])
        if reachable < floor:
            return (f"at its recent rate (+{rate:.2f} points an epoch) it would reach at most {reachable:.2f}% val by "
                    f"max_epochs = {plan.max_epochs}, short of the budget ({floor:.2f}%)")
    return None


def rank_key(record: dict, select: str, within: bool, group: str | None = None) -> tuple:
    """Sort key (higher is better) of a candidate under `select`: within budget first, then
    by the rule; outside the budget, by accuracy (the fallback). `group`: per target, the
    target group whose latency ranks (by size where that group has no latency)."""
    accuracy = record["accuracy"]
    if not within or select == "accuracy":
        return (within, accuracy, -record["params"])
    return (within, -cost(record, select, group), accuracy)


def cost(record: dict, select: str, group: str | None = None) -> float:
    """What `select` minimizes among candidates within budget: INT8 bytes, or latency
    (`group`'s, per target; by INT8 bytes where there is no latency)."""
    latency = record["latency_ms"] if group is None else record["latency_by_group"].get(group)
    return record["int8_bytes"] if select == "smallest" or latency is None else latency


def going_on(alive: list, select: str, within, group: str | None = None) -> list:
    """Who goes on after a round of halving, for one target group (or for all): the top half
    by the rule, and, under select = "smallest" or "fastest", the cheapest candidate too. The
    cheapest is the one the rule picks if it reaches the budget, and an early round's accuracy
    ranks how fast a candidate learns, not where it ends: it goes on until the last round
    shows whether it gets within budget."""
    ranked = sorted(alive, key=lambda c: rank_key(c.record, select, within(c.record), group), reverse=True)
    keep = ranked[:math.ceil(len(alive) / 2)]
    if select != "accuracy":
        cheapest = min(alive, key=lambda c: cost(c.record, select, group))
        if cheapest not in keep:
            keep.append(cheapest)
    return keep


@dataclasses.dataclass
class TargetGroup:
    """Targets that share a profile (as each target resolves it): one student ranks for all."""

    label: str  # the profile's name
    targets: list[str]
    profile: object
    allow_estimate: bool
    source: str = ""  # where its latencies come from (measured on this host, estimate, ...)

    @property
    def key(self) -> str:
        return json.dumps(self.profile.model_dump(mode="json", exclude={"path"}), sort_keys=True)


def target_groups(targets) -> list[TargetGroup]:
    """The targets grouped by their resolved profile, in the order the config lists them."""
    groups: dict[str, TargetGroup] = {}
    for target in targets:
        profile = target.effective_profile
        group = TargetGroup(profile.name, [], profile, target.allow_estimate)
        group = groups.setdefault(group.key, group)
        group.targets.append(target.name)
        group.allow_estimate = group.allow_estimate and target.allow_estimate
    labels = [g.label for g in groups.values()]
    for g in groups.values():  # the same profile with other overrides (threads, runner): told apart
        if labels.count(g.label) > 1:
            g.label = f"{g.label} ({', '.join(g.targets)})"
    return list(groups.values())


class _Candidate:
    """One student candidate under training, with its record for the manifest."""

    def __init__(self, arch: str, cfg: StudentConfig, data: Dataset, teachers, kd, train, estimator,
                 epochs: int, training: Dataset, rankers: dict | None = None):
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
        if rankers is not None:  # per target: its INT8 latency on each group's profile (None: ranked by size)
            self.record["latency_by_group"] = {label: None if make is None else round(make(self.bundle)(model), 4)
                                               for label, make in rankers.items()}
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

    def train_round(self, plan: schedule.Schedule, until: int, data: Dataset) -> float:
        """One round of an auto search: train on (from where it stands) until epoch `until`
        or until the auto schedule stops it; scored on val every epoch."""
        record = trainer.train_auto(self.trainer, self.bundle, data, plan, until=until)
        accuracy = record["best_val_accuracy"]
        self.record.update(accuracy=accuracy, epochs_trained=self.trainer.epoch, round_schedule=record,
                           steps=self.trainer.epoch * self.trainer.steps_per_epoch)
        self.record["rounds"].append({"epochs": self.trainer.epoch, "accuracy": accuracy,
                                      "stopped": record["stopped"]})
        return accuracy

    def train_auto(self, plan: schedule.Schedule, data: Dataset, within_budget) -> float:
        """Train on from where the search left it until `plan` stops it (training/schedule.py),
        keeping the best epoch's weights."""
        record = trainer.train_auto(self.trainer, self.bundle, data, plan, within_budget)
        accuracy = record["best_val_accuracy"]  # the kept weights' val accuracy
        self.record.update(accuracy=accuracy, epochs_trained=record["epochs"], schedule=record,
                           steps=record["epochs"] * self.trainer.steps_per_epoch)
        self.record["rounds"].append({"epochs": record["epochs"], "accuracy": accuracy, "auto": True})
        return accuracy


def run(data: Dataset, config: DistillSections, workdir: Path, *, reference: StageResult) -> StageResult:
    cfg: StudentConfig = config.student
    kd: DistillConfig = config.distill
    teachers = reference.bundles
    teacher_accuracy = reference.accuracy
    estimator = None
    if cfg.select == "fastest" and len(cfg.candidates) > 1 and not cfg.per_target:
        from edgekiln.targets.runners.estimate import ProfileEstimator

        estimator = ProfileEstimator(cfg.profile, data.image_size)
    train = config.train
    plan = schedule.from_config(cfg, train)
    training = unlabelled.joined(data)  # the labelled images, then any unlabelled ones: one copy for all
    groups = target_groups(config.targets) if cfg.per_target else None
    rankers = None if groups is None else _rankers(groups, data, workdir)
    candidates = [_Candidate(arch, cfg, data, teachers, kd, train, estimator, plan.length, training, rankers)
                  for arch in cfg.candidates]
    searched = plan.auto and len(candidates) > 1
    rounds = auto_round_caps(len(candidates), plan) if searched else halving_schedule(len(candidates), plan.length)
    alive = list(candidates)
    total = config.budget
    holds = budgets.holds_with_margin(train.within_budget_margin, "distill", (reference.stage, teacher_accuracy),
                                      teacher_accuracy, total)
    labels = [None] if groups is None else [g.label for g in groups]
    within = functools.partial(_within, teacher=teacher_accuracy, budget=total)
    for round_index, epochs in enumerate(rounds):
        if plan.auto and not searched:  # one candidate: its own auto loop
            for c in alive:
                c.train_auto(plan, data, holds if train.stop_when_within_budget else None)
            break
        for j, c in enumerate(alive):
            if searched:  # under a time budget: a part of what is left, one kept for the rounds after
                with time_budget.portion(len(alive) - j + 1):
                    c.train_round(plan, epochs, data)
            else:
                c.train_to(epochs, data)
        if searched:
            alive = _drop_hopeless(alive, round_index, epochs, teacher_accuracy, total, plan)
        if len(alive) == 1:
            break
        keep = math.ceil(len(alive) / 2)
        # Per target, a candidate goes on while it goes on for some group.
        staying = {id(c) for g in labels for c in going_on(alive, cfg.select, within, g)}
        ranked = sorted(alive, key=lambda c: rank_key(c.record, cfg.select, within(c.record), labels[0]), reverse=True)
        for c in alive:
            if id(c) not in staying:
                c.record["why"] = (f"dropped after round {round_index + 1} ({epochs} epochs): ranked "
                                   f"{ranked.index(c) + 1} of {len(ranked)} by {_rule(cfg.select)}, and not the "
                                   "cheapest" if groups is None
                                   else f"dropped after round {round_index + 1} ({epochs} epochs): in no target "
                                        f"group's top {keep} of {len(alive)} by {_rule(cfg.select)}, nor its cheapest")
        alive = [c for c in ranked if id(c) in staying]
        console.print(f"  round {round_index + 1} ({epochs} epochs): "
                      + ", ".join(f"{c.record['name']} {c.record['accuracy']:.2f}%" for c in ranked)
                      + f"; {', '.join(c.record['name'] for c in alive)} {'goes' if len(alive) == 1 else 'go'} on")
    if searched:
        for j, c in enumerate(alive):  # the survivors train on from their last round until their schedules stop them
            with time_budget.portion(len(alive) - j):
                c.train_auto(plan, data, holds if train.stop_when_within_budget else None)
    if plan.auto and len(alive) > 1:  # more than one trained to the end: ranked on where they ended
        alive = sorted(alive, key=lambda c: rank_key(c.record, cfg.select, within(c.record), labels[0]), reverse=True)
    if groups is not None:
        return _per_target(candidates, alive, groups, cfg, kd, data, teacher_accuracy, total, plan, rounds)
    winner = alive[0]
    _finish_chosen(winner, data)
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
    return StageResult.with_model(winner.record["accuracy"], winner.bundle, params=modeling.params(model),
                                  macs=modeling.macs(model, winner.bundle.input_size), figures=DistillFigures(
        arch=winner.record["name"], feature_loss=kd.feature_loss,
        student=StudentRecord(name=winner.record["name"], select=cfg.select, profile=cfg.profile,
                              train_images=len(data.train_y), schedule=rounds, epochs_spent=spent,
                              epochs_if_each_trained_fully=plan.length * len(candidates), within_budget=within,
                              auto=winner.record.get("schedule"), unlabelled=data.unlabelled,
                              candidates=[c.record for c in candidates])))


# Each student family from narrow to wide: what to try when the widest tried misses the budget.
FAMILIES = (
    ("resnet10t_w16", "resnet10t_w24", "resnet10t_w32", "resnet10t"),
    ("mobilenetv3_small_050", "mobilenetv3_small_075", "mobilenetv3_small_100", "mobilenetv3_large_075",
     "mobilenetv3_large_100"),
    ("mobilevit_xxs", "mobilevit_xs", "mobilevit_s"),
    ("mobilenetv2_050", "mobilenetv2_075", "mobilenetv2_100", "mobilenetv2_140"),
)


def refresh(result: StageResult, config: DistillSections, teacher: float) -> None:
    """The search's budget verdicts under the budget in force: the stage's key leaves
    [budget] out when it cannot change the model (one candidate), so a cached result may
    have been recorded under another budget."""
    student = result.figures.student
    if student is None:
        return
    budget = config.budget
    chosen = next((c for c in student.candidates if c.chosen), None)
    if chosen is not None and chosen.accuracy is not None:
        student.within_budget = budgets.within_total(chosen.accuracy, teacher, budget)
    plan = schedule.from_config(config.student, config.train)
    missed = missed_budget([dumped(c) for c in student.candidates], teacher, budget, plan, student.train_images or 0)
    student.missed_budget = None if missed is None else MissedBudget.model_validate(missed)


def missed_budget(records: list[dict], teacher: float, budget, plan: schedule.Schedule,
                  train_images: int) -> dict | None:
    """When no candidate is within budget.max_drop_total of the teacher: which came closest,
    by how much, and what to try, in the order they usually pay (None when one is within)."""
    floor = budgets.lowest_within_total(teacher, budget)
    trained = [r for r in records if r.get("accuracy") is not None]
    if floor is None or not trained or any(r["accuracy"] >= floor for r in trained):
        return None
    closest = max(trained, key=lambda r: r["accuracy"])
    short = floor - closest["accuracy"]
    tried = {r["name"] for r in records}
    tries = []
    for family in FAMILIES:
        if closest["name"] in family:
            wider = [a for a in family[family.index(closest["name"]) + 1:] if a not in tried]
            if wider:
                tries.append(f"a wider student of the same family: [student] arch = \"{wider[0]}\"")
    stopped = str((closest.get("schedule") or {}).get("stopped") or "")
    if plan.auto and "max_epochs" in stopped:
        tries.append(f"a longer schedule: it was still improving at [student] max_epochs = {plan.max_epochs}")
    tries.append(f"more training images: {train_images} trained it; distillation gains most from more "
                 "(labelled or [data] unlabelled_path)")
    tries.append(f"a looser budget: [budget] max_drop_total = {budget.max_drop_total + short:.2f} would hold it "
                 f"(now {budget.max_drop_total:g})")
    return {"closest": closest["name"], "val_accuracy": closest["accuracy"], "needed": floor,
            "short_by": round(short, 2), "try": tries}


def _drop_hopeless(alive: list, round_index: int, epochs: int, teacher: float, budget, plan) -> list:
    """The candidates of a round that can still reach the budget (each dropped one's record
    says why not); the most accurate stays when none can, as the fallback rule picks it."""
    reasons = {id(c): hopeless(c.record, teacher, budget, plan) for c in alive}
    keep = [c for c in alive if reasons[id(c)] is None] or [max(alive, key=lambda c: c.record["accuracy"])]
    for c in alive:
        if c not in keep:
            c.record["why"] = f"dropped after round {round_index + 1} (up to {epochs} epochs): {reasons[id(c)]}"
            console.print(f"  {c.record['name']}: {c.record['why']}", markup=False)
    return keep


def _finish_chosen(candidate: _Candidate, data: Dataset) -> None:
    """A chosen candidate's loop finished (its kept weights in place), and its record: chosen,
    how many unlabelled images its KD term saw, what the teacher cost it."""
    candidate.trainer.finish()
    candidate.record["chosen"] = True
    if data.unlabelled is not None:
        candidate.record["unlabelled_seen"] = candidate.trainer.notes.get("unlabelled_seen", 0)
    candidate.record["teacher_outputs"] = _teacher_outputs(candidate.trainer)


def _teacher_outputs(loop: trainer.Trainer) -> dict:
    """What the teacher cost a student's loop: once per image (or re-used), or on every step's view."""
    once = loop.teacher_outputs
    return {
        "computed": ("once per image (the inputs are the same every epoch)" if once and not once["reused"]
                     else "re-used: computed once per image by an earlier loop or run on this teacher and these "
                          "images" if once else "on every step, on the view the student sees (augmented inputs)"),
        "precompute_seconds": round(loop.precompute_seconds, 2) if once else None,
        "per_step_seconds": None if once else round(loop.notes.get("teacher_step_seconds", 0.0), 2),
        **({"stored_as": once["entry"]} if once and once["stored"] else {})}


def _within(record: dict, teacher: float, budget) -> bool:
    return budgets.within_total(record["accuracy"], teacher, budget)


def _key(record: dict, select: str, teacher: float, budget, group: str | None = None) -> tuple:
    return rank_key(record, select, _within(record, teacher, budget), group)


def _rule(select: str) -> str:
    return {"accuracy": "accuracy", "smallest": "fewest INT8 bytes", "fastest": "INT8 latency"}[select]


def _rankers(groups: list[TargetGroup], data: Dataset, workdir: Path) -> dict:
    """{group label: a function of a candidate's bundle giving its latency function, or None}:
    each group's profile times the candidates where it measures, else estimates them; a
    group with neither is ranked by size. Each group's `source` says which."""
    from edgekiln.training import model_latency

    out = {}
    for group in groups:
        out[group.label], group.source = model_latency.for_profile(
            group.profile, data, workdir, subject=f"targets.{group.targets[0]}", allow_estimate=group.allow_estimate)
    return out


def _per_target(candidates, alive, groups: list[TargetGroup], cfg: StudentConfig, kd, data: Dataset,
                teacher_accuracy: float, total, plan, rounds) -> StageResult:
    """Each target group's fastest survivor within budget (the most accurate when none is):
    one model per distinct winner, the first target's first. Its `forks` tell the runner
    which targets each model's later stages build."""
    winners: dict[int, dict] = {}
    for group in groups:
        best = max(alive, key=lambda c: _key(c.record, cfg.select, teacher_accuracy, total, group.label))
        latency = best.record["latency_by_group"][group.label]
        within = budgets.within_total(best.record["accuracy"], teacher_accuracy, total)
        why = (f"fastest on {group.label} ({latency:.3f} ms, {group.source}) among those within "
               "budget.max_drop_total of the teacher" if within and latency is not None else
               f"smallest among those within budget.max_drop_total ({group.label}: {group.source})" if within
               else f"no candidate within budget.max_drop_total of the teacher ({teacher_accuracy:.2f}%): the most "
                    "accurate")
        entry = winners.setdefault(id(best), {"candidate": best, "targets": [], "why": []})
        entry["targets"] += group.targets
        entry["why"].append({"profile": group.label, "targets": group.targets, "why": why,
                             "latency_ms": latency, "latency_source": group.source})
    chosen = list(winners.values())
    for entry in chosen:
        c = entry["candidate"]
        _finish_chosen(c, data)
        c.record.update(chosen_for=entry["targets"],
                        why="; ".join(f"{', '.join(w['targets'])}: {w['why']}" for w in entry["why"]))
    for c in candidates:
        if c in alive and not c.record["chosen"]:
            c.record["why"] = "trained to the end, fastest for no target group"
    first = chosen[0]["candidate"]
    spent = sum(c.record["epochs_trained"] for c in candidates)
    forks = [Fork(student=e["candidate"].record["name"], targets=e["targets"],
                  accuracy=e["candidate"].record["accuracy"], params=modeling.params(e["candidate"].bundle.model),
                  macs=modeling.macs(e["candidate"].bundle.model, e["candidate"].bundle.input_size), why=e["why"])
             for e in chosen]
    result = StageResult.with_models(first.record["accuracy"], [e["candidate"].bundle for e in chosen],
                                     params=forks[0].params, macs=forks[0].macs,
                                     forks=forks if len(forks) > 1 else [], figures=DistillFigures(
        arch=first.record["name"], feature_loss=kd.feature_loss,
        student=StudentRecord(
            name=first.record["name"], select=cfg.select, profile=None, per_target=True,
            train_images=len(data.train_y),
            groups=[{"profile": g.label, "targets": g.targets, "latency_source": g.source} for g in groups],
            schedule=rounds, epochs_spent=spent, epochs_if_each_trained_fully=plan.length * len(candidates),
            within_budget=budgets.within_total(first.record["accuracy"], teacher_accuracy, total),
            auto=first.record.get("schedule"), unlabelled=data.unlabelled,
            candidates=[c.record for c in candidates])))
    if len(forks) > 1:
        result.grader = evaluation.branches_grader(result.bundles)
    return result
