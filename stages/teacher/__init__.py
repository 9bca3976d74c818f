"""Stage `teacher`: fine-tune and score every candidate teacher (timm names, Hugging Face
ids, local checkpoints), keep the best, or the best k whose averaged logits then teach the
student. Every accuracy drop of the run is measured against it.

This module declares the stage (its config, its place in the DAG, its part of the manifest
and reports) and imports no torch; the work is in `work.py`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edgekiln.stages import Sections, Stage, register
from edgekiln.training.config import Epochs, LearningRate, TrainConfig


class TeacherCandidate(BaseModel):
    """A candidate given as a table: an architecture and, optionally, local weights."""

    model_config = ConfigDict(extra="forbid")

    arch: str
    checkpoint: Path | None = None

    @property
    def name(self) -> str:
        return f"{self.arch}@{self.checkpoint.name}" if self.checkpoint else self.arch


class TeacherConfig(BaseModel):
    """`[teacher]`: candidates are timm names, `hf-hub:` timm ids, `hf:` transformers
    checkpoints (hub id or local directory), `clip:` CLIP-style models that classify from the
    class names (hub id or local directory), or {arch, checkpoint} tables."""

    model_config = ConfigDict(extra="forbid")

    candidates: list[str | TeacherCandidate] = Field(min_length=1)
    pretrained: bool = False
    epochs: Epochs = 5
    max_epochs: int = Field(50, ge=1, le=1000)  # epochs = "auto": the cap (and the span of its LR schedule)
    max_minutes: float | None = Field(None, gt=0)  # epochs = "auto": stop a candidate after this long
    lr: LearningRate = 3e-3  # or "auto": a range test per candidate (training/lr_range.py)
    image_size: int | None = Field(None, ge=16, le=1024)  # default: see `input_size` below
    select: Literal["accuracy", "accuracy_per_gflop"] = "accuracy"
    max_macs: float | None = Field(None, gt=0)  # per image, e.g. 5e9
    max_latency_ms: float | None = Field(None, gt=0)  # host, batch 1, torch on the CPU
    ensemble: int = Field(1, ge=1, le=16)
    # `clip:` candidates: the prompts each class name fills ({} is the name), averaged per
    # class; "zero-shot" trains nothing, "linear-probe" trains the head on the train split.
    prompts: list[str] | None = Field(None, min_length=1)
    clip_head: Literal["zero-shot", "linear-probe"] = "zero-shot"

    @field_validator("prompts")
    @classmethod
    def _a_place_for_the_name(cls, v):
        if v is not None:
            missing = [p for p in v if p.count("{}") != 1]
            if missing:
                raise ValueError(f"each prompt must hold {{}} once, where the class name goes: {missing[0]!r}")
        return v

    def resolved(self) -> list[TeacherCandidate]:
        return [c if isinstance(c, TeacherCandidate) else TeacherCandidate(arch=c) for c in self.candidates]

    def check_inputs(self) -> None:
        """ValueError ("key: why") for each timm name whose published weights `pretrained = true`
        asks for and this machine cannot have: offline and not in the hub cache (`validate`
        finds it in well under a second; the run's preflight asks timm itself)."""
        from edgekiln.hub_access import timm_weights_problem

        if not self.pretrained:
            return
        problems = []
        for i, c in enumerate(self.resolved()):
            if c.checkpoint is None and ":" not in c.arch and (why := timm_weights_problem(c.arch)):
                problems.append(f"candidates[{i}]: pretrained = true needs timm's weights for {c.arch}: {why}; set "
                                "teacher.pretrained = false to train it from scratch (slower to a lower accuracy "
                                "on small data), or fill the hub cache on a machine online")
        if problems:
            raise ValueError("\n".join(problems))

    @model_validator(mode="after")
    def _nothing_distils_from_an_untrained_head(self) -> "TeacherConfig":
        untrained = [c for c in self.resolved() if c.checkpoint is None
                     and not (c.arch.startswith("clip:") and self.clip_head == "zero-shot")]
        if self.epochs == 0 and untrained:
            raise ValueError(f"teacher.epochs = 0 would distil from {untrained[0].name} untrained (its classifier "
                             'head is new): give a number of epochs or "auto"; 0 is for candidates given as '
                             "{arch, checkpoint} tables with weights trained on these classes")
        return self

    def resolve_paths(self, base: Path) -> None:
        """Checkpoints and local transformers directories relative to the config file."""
        for i, cand in enumerate(self.candidates):
            if not isinstance(cand, str):
                if cand.checkpoint is not None and not cand.checkpoint.is_absolute():
                    cand.checkpoint = (base / cand.checkpoint).resolve()
            elif cand.startswith(("hf:", "clip:")):
                prefix, ref = cand.split(":", 1)
                if (base / ref).resolve().is_dir():  # a local directory, not a hub id
                    self.candidates[i] = f"{prefix}:{(base / ref).resolve()}"

    def input_paths(self) -> list[tuple[str, Path, bool]]:
        """(key, path, is a data folder) of every file it reads."""
        out = []
        for i, cand in enumerate(self.candidates):
            if not isinstance(cand, str) and cand.checkpoint is not None:
                out.append((f"candidates[{i}].checkpoint", Path(cand.checkpoint), False))
            elif isinstance(cand, str) and cand.startswith(("hf:", "clip:")) and Path(cand.split(":", 1)[1]).is_dir():
                out.append((f"candidates[{i}]", Path(cand.split(":", 1)[1]), False))
        return out


class TeacherSections(Sections):
    """What stage `teacher` reads of the config, each section typed."""

    teacher: TeacherConfig
    train: TrainConfig


def _plan(cfg, model):
    """Each candidate's loop (a zero-shot one trains nothing); hands on the first candidate."""
    from edgekiln.stages.planning import loop
    from edgekiln.training import zero_shot

    t = cfg.teacher
    works = [loop(f"teacher {c.name}", c.arch, t.epochs, t.max_epochs, cfg.train.patience)
             for c in t.resolved() if not zero_shot.is_zero_shot(c.arch) and t.epochs != 0]
    return works, (t.resolved()[0].arch, 1.0)


STAGE = register(Stage(plan=_plan, trains=True, formats=lambda sections: set(),
    name="teacher", order=10, run="edgekiln.stages.teacher.work:run", section="teacher", schema=TeacherConfig,
    reads=TeacherSections, preflight="edgekiln.stages.teacher.work:preflight", starts=True,
    report="edgekiln.stages.teacher.report:REPORT"))
