"""Stage `prune`: structured pruning of the student (torch-pruning, DepGraph) to a MACs or
latency target, in steps, each followed by a KD recovery fine-tune; a step that breaks the
budget is undone and pruning stops at the last step that held.

This module declares the stage and imports no torch; the work is in `work.py`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgekiln.stages import Sections, Stage, register
from edgekiln.training.config import DistillConfig, Epochs, LearningRate, TrainConfig


class PruneConfig(BaseModel):
    """`[prune]`: how far to prune the student, and how.

    The target is `macs_ratio` (share of the student's MACs to keep), or `latency_ms` on
    `profile`: estimated by the profile's cost model at each step, or with `measure` the
    p50 of the step's INT8 artifact timed by the profile's runner (host, adb or ssh). With `steps` > 1 the
    target is approached in equal steps, each followed by a KD recovery fine-tune of
    `finetune_epochs`; a step whose accuracy breaks the budget ([budget]: max_drop.prune
    against the distilled student, max_drop_total against the teacher) is undone, and
    pruning stops at the last step that held."""

    model_config = ConfigDict(extra="forbid")

    macs_ratio: float | None = Field(None, gt=0.0, le=1.0)  # default 0.5 when no latency target
    latency_ms: float | None = Field(None, gt=0.0)
    profile: str | None = None
    measure: bool = False  # time each step's INT8 artifact on the profile's runner instead of estimating
    steps: int = Field(1, ge=1, le=50)
    importance: Literal["magnitude", "taylor"] = "magnitude"
    finetune_epochs: Epochs = 3
    max_epochs: int = Field(30, ge=1, le=1000)  # finetune_epochs = "auto": the cap per step
    max_minutes: float | None = Field(None, gt=0)  # finetune_epochs = "auto": per step
    lr: LearningRate = 1e-3  # or "auto": a range test before each step's recovery (training/lr_range.py)

    @model_validator(mode="after")
    def _one_target(self) -> "PruneConfig":
        if self.latency_ms is not None and self.macs_ratio is not None:
            raise ValueError("give macs_ratio or latency_ms, not both")
        if (self.latency_ms is None) != (self.profile is None):
            raise ValueError("latency_ms and profile go together (the latency is estimated on that profile)")
        if self.measure and self.latency_ms is None:
            raise ValueError("measure needs a latency target (latency_ms and profile)")
        if self.latency_ms is None and self.macs_ratio is None:
            self.macs_ratio = 0.5
        return self

    def resolve_paths(self, base: Path) -> None:
        """A profile given as a file is relative to the config file."""
        from edgekiln.targets.profiles import beside

        self.profile = beside(self.profile, base)


class PruneSections(Sections):
    """What stage `prune` reads of the config, each section typed."""

    prune: PruneConfig
    distill: DistillConfig
    train: TrainConfig
    budget: Any = None  # [budget] (engine.config.BudgetConfig); None where the config gives none


def unkeyed(config: PruneSections) -> set[str]:
    """[budget] decides where stepwise pruning stops and when an auto recovery may stop
    (`stop_when_within_budget`); with one fixed step it only gates the result."""
    cfg: PruneConfig = config.prune
    stops_on_budget = cfg.finetune_epochs == "auto" and config.train.stop_when_within_budget
    return set() if cfg.steps > 1 or stops_on_budget else {"budget"}


def _profiles(config: PruneSections) -> dict:
    """A latency target is estimated or measured on this profile: its content is in the key."""
    from edgekiln.targets.profiles import load_profile

    name = config.prune.profile
    return {} if name is None else {"prune.profile": load_profile(name)}


def _formats(sections: PruneSections) -> set[str]:
    """With `measure`, each step's INT8 artifact is converted to its profile's format and timed."""
    from edgekiln.targets.profiles import load_profile

    cfg = sections.prune
    return {load_profile(cfg.profile).format} if cfg.measure and cfg.profile else set()


def _plan(cfg, model):
    """Each step's recovery loop, on the model shrinking step by step; hands on the pruned model."""
    from edgekiln.stages.planning import loop

    p, (arch, scale) = cfg.prune, model
    ratio = p.macs_ratio if p.macs_ratio is not None else (0.5 if p.latency_ms is None else 0.7)
    works = [loop(f"prune step {k + 1}/{p.steps}: recovery", arch, p.finetune_epochs, p.max_epochs,
                  cfg.train.patience, scale * ratio ** ((k + 1) / p.steps)) for k in range(p.steps)]
    return works, (arch, scale * ratio)


STAGE = register(Stage(plan=_plan, trains=True, formats=_formats,
    name="prune", order=30, run="edgekiln.stages.prune.work:run", section="prune", schema=PruneConfig,
    default=PruneConfig(), reads=PruneSections, preflight="edgekiln.stages.prune.work:preflight",
    unkeyed=unkeyed, profiles=_profiles, budgeted=True,
    report="edgekiln.stages.prune.report:REPORT"))
