"""Stage `distill`: knowledge distillation from the selected teacher(s) into a mobile student,
or into the best of several candidate students found by successive halving. Before any
stage, its pre-check converts every untrained candidate to every target's format, so a
student a converter cannot handle stops the run in seconds (or leaves the search).

This module declares the stage and imports no torch; the work is in `work.py` and
`precheck.py`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edgekiln.stages import Sections, Check, Stage, register
from edgekiln.targets.target import TargetConfig
from edgekiln.training.config import DistillConfig, Epochs, LearningRate, TrainConfig


class StudentConfig(BaseModel):
    """`[student]`: the mobile architecture to distil into (a timm name), or a list of
    candidates searched by successive halving and chosen by `select`."""

    model_config = ConfigDict(extra="forbid")

    arch: str | list[str] = "mobilenetv3_small_050"
    pretrained: bool = False
    epochs: Epochs = 10
    max_epochs: int = Field(100, ge=1, le=1000)  # epochs = "auto": the cap
    max_minutes: float | None = Field(None, gt=0)  # epochs = "auto": stop the chosen student after this long
    lr: LearningRate = 3e-3  # or "auto": a range test per candidate, with the KD loss (training/lr_range.py)
    # Among the candidates within budget.max_drop_total of the teacher (val): "smallest"
    # (fewest INT8 weight bytes), "fastest" (INT8 latency on `profile`, estimated), or
    # "accuracy" (the most accurate); none within budget: the most accurate. "fastest"
    # without `profile` chooses per target: each group of targets that share a profile gets
    # the candidate fastest on it (timed by its runner where it measures, else estimated),
    # and the stages after distillation run once per distinct winner (a branch each).
    select: Literal["accuracy", "smallest", "fastest"] = "smallest"
    profile: str | None = None  # with select = "fastest": one profile (with an [estimate] table) for all targets

    @field_validator("arch")
    @classmethod
    def _distinct(cls, v):
        if isinstance(v, list):
            if not v:
                raise ValueError("give at least one architecture")
            if len(set(v)) != len(v):
                raise ValueError("lists an architecture twice")
        return v

    @model_validator(mode="after")
    def _nothing_ships_untrained(self) -> "StudentConfig":
        if self.epochs == 0:
            raise ValueError("student.epochs = 0 would ship a student that was never trained: give a number of "
                             'epochs or "auto"')
        return self

    @model_validator(mode="after")
    def _profile_for_fastest(self) -> "StudentConfig":
        if self.profile is not None and self.select != "fastest":
            raise ValueError("profile is only read with select = 'fastest'")
        return self

    def check_inputs(self) -> None:
        """ValueError ("key: why") for each student whose published weights `pretrained = true`
        asks for and this machine cannot have (as [teacher]'s)."""
        from edgekiln.hub_access import timm_weights_problem

        if not self.pretrained:
            return
        problems = []
        for i, arch in enumerate(self.candidates):
            key = "arch" if isinstance(self.arch, str) else f"arch[{i}]"
            if ":" not in arch and (why := timm_weights_problem(arch)):
                problems.append(f"{key}: pretrained = true needs timm's weights for {arch}: {why}; set "
                                "student.pretrained = false, or fill the hub cache on a machine online")
        if problems:
            raise ValueError("\n".join(problems))

    @property
    def per_target(self) -> bool:
        """Each group of targets sharing a profile gets its own fastest candidate."""
        return self.select == "fastest" and self.profile is None and len(self.candidates) > 1

    @property
    def candidates(self) -> list[str]:
        return [self.arch] if isinstance(self.arch, str) else list(self.arch)

    def resolve_paths(self, base: Path) -> None:
        """A profile given as a file is relative to the config file."""
        from edgekiln.targets.profiles import beside

        self.profile = beside(self.profile, base)


class DistillSections(Sections):
    """What stage `distill` reads of the config, each section typed."""

    student: StudentConfig
    distill: DistillConfig
    train: TrainConfig
    budget: Any = None  # [budget] (engine.config.BudgetConfig); None where the config gives none
    targets: list[TargetConfig]


def unkeyed(config: DistillSections) -> set[str]:
    """[budget] decides which candidate wins when there is more than one, and when an auto
    schedule may stop with `stop_when_within_budget`."""
    cfg: StudentConfig = config.student
    stops_on_budget = cfg.epochs == "auto" and config.train.stop_when_within_budget
    out = {"budget"} if len(cfg.candidates) == 1 and not stops_on_budget else set()
    return out if cfg.per_target else out | {"targets"}  # the targets' profiles rank only per target


def _profiles(config: DistillSections) -> dict:
    """select = "fastest" ranks the candidates on this profile (or, per target, on each
    target's): its content is in the key."""
    from edgekiln.targets.profiles import load_profile

    cfg: StudentConfig = config.student
    if cfg.per_target:
        return {f"targets.{t.name}.profile": t.effective_profile for t in config.targets
                if t.effective_profile is not None}
    return {} if cfg.profile is None else {"student.profile": load_profile(cfg.profile)}


def _formats(sections: DistillSections) -> set[str]:
    """select = "fastest" per target times each candidate's artifact where a target's runner
    measures: its formats; otherwise distillation converts nothing (the pre-check is a
    check of its own, keyed with every format)."""
    cfg: StudentConfig = sections.student
    return {t.format for t in sections.targets} if cfg.select == "fastest" else set()


def _plan(cfg, model):
    """The convertibility pre-check, then the search: every candidate's first round, the
    better half's later rounds (in the listed order: who survives is not known yet), and the
    winner's loop; hands on the first candidate."""
    from edgekiln.stages import planning
    from edgekiln.stages.distill.work import auto_round_caps, halving_schedule
    from edgekiln.training.schedule import from_config

    s = cfg.student
    names = s.candidates
    plan = from_config(s, cfg.train)
    formats = {t.format for t in cfg.targets}
    works = [planning.Work(f"pre-check: {a} to {f}", seconds=planning.CONVERSION_SECONDS.get(f, 10.0))
             for a in names for f in sorted(formats)]
    rounds = auto_round_caps(len(names), plan) if plan.auto and len(names) > 1 else \
        halving_schedule(len(names), plan.length)[:-1]
    final, least, most = planning.epochs_of(s.epochs, s.max_epochs, cfg.train.patience)
    for i, arch in enumerate(names):
        reached = [cap for r, cap in enumerate(rounds) if i < -(-len(names) // 2 ** r)]
        last = reached[-1] if reached else 0
        if i == 0:  # the winner, trained to its end
            works.append(planning.Work(f"student {arch} (the search's winner)", arch, max(final, last),
                                       max(least, last), max(most, last)))
        else:
            works.append(planning.Work(f"student {arch} (rounds to {last} epochs)", arch, last, last, last))
    return works, (names[0], 1.0)


STAGE = register(Stage(plan=_plan, trains=True, formats=_formats,
    name="distill", order=20, run="edgekiln.stages.distill.work:run", section="student", schema=StudentConfig,
    default=StudentConfig(), reads=DistillSections, preflight="edgekiln.stages.distill.work:preflight",
    unkeyed=unkeyed, profiles=_profiles, budgeted=True, refresh="edgekiln.stages.distill.work:refresh",
    checks=(Check("precheck", "edgekiln.stages.distill.precheck:check", "edgekiln.stages.distill.precheck:inputs",
                  refresh="edgekiln.stages.distill.precheck:refresh"),),
    report="edgekiln.stages.distill.report:REPORT"))
