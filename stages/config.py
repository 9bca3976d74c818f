"""The stages' config sections ([data], [teacher], [student], [train], [distill], [prune],
[quantize]): schemas only. Like the rest of the config schema (pipeline/config.py,
targets/target.py) this module imports neither torch nor a converter, so a config is
validated in well under two seconds (`edgekiln validate`). Checks that need torch (timm
architecture names, a RandAugment string) are the stages' preflights, run before any work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edgekiln.training.config import Epochs
from edgekiln.targets.int8 import Int8Options

# The stages `[budget.max_drop]` may limit, each against the stage before it. The one
# declaration: the config's schema and the graph's nodes both read it.
BUDGETED_STAGES = ("distill", "prune", "quantize", "export")


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
    checkpoints (hub id or local directory), or {arch, checkpoint} tables."""

    model_config = ConfigDict(extra="forbid")

    candidates: list[str | TeacherCandidate] = Field(min_length=1)
    pretrained: bool = False
    epochs: Epochs = 5
    max_epochs: int = Field(50, ge=1, le=1000)  # epochs = "auto": the cap (and the span of its LR schedule)
    max_minutes: float | None = Field(None, gt=0)  # epochs = "auto": stop a candidate after this long
    lr: float = Field(3e-3, gt=0.0)
    image_size: int | None = Field(None, ge=16, le=1024)  # default: see `input_size` below
    select: Literal["accuracy", "accuracy_per_gflop"] = "accuracy"
    max_macs: float | None = Field(None, gt=0)  # per image, e.g. 5e9
    max_latency_ms: float | None = Field(None, gt=0)  # host, batch 1, torch on the CPU
    ensemble: int = Field(1, ge=1, le=16)

    def resolved(self) -> list[TeacherCandidate]:
        return [c if isinstance(c, TeacherCandidate) else TeacherCandidate(arch=c) for c in self.candidates]


class StudentConfig(BaseModel):
    """`[student]`: the mobile architecture to distil into (a timm name), or a list of
    candidates searched by successive halving and chosen by `select`."""

    model_config = ConfigDict(extra="forbid")

    arch: str | list[str] = "mobilenetv3_small_050"
    pretrained: bool = False
    epochs: Epochs = 10
    max_epochs: int = Field(100, ge=1, le=1000)  # epochs = "auto": the cap
    max_minutes: float | None = Field(None, gt=0)  # epochs = "auto": stop the chosen student after this long
    lr: float = Field(3e-3, gt=0.0)
    # Among the candidates within budget.max_drop_total of the teacher (val): "smallest"
    # (fewest INT8 weight bytes), "fastest" (INT8 latency estimated on `profile`), or
    # "accuracy" (the most accurate); none within budget: the most accurate.
    select: Literal["accuracy", "smallest", "fastest"] = "smallest"
    profile: str | None = None  # with select = "fastest": a profile with an [estimate] table

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
    def _profile_for_fastest(self) -> "StudentConfig":
        if self.select == "fastest" and self.profile is None:
            raise ValueError("select = 'fastest' needs `profile` (the device whose latency decides)")
        if self.profile is not None and self.select != "fastest":
            raise ValueError("profile is only read with select = 'fastest'")
        return self

    @property
    def candidates(self) -> list[str]:
        return [self.arch] if isinstance(self.arch, str) else list(self.arch)


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
    lr: float = Field(1e-3, gt=0.0)

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


class QuantizeConfig(BaseModel):
    """`[quantize]`: how the student becomes INT8."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["ptq", "qat"] = "ptq"
    epochs: Epochs = 3  # QAT fine-tuning epochs
    max_epochs: int = Field(10, ge=1, le=1000)  # epochs = "auto": the cap
    max_minutes: float | None = Field(None, gt=0)
    lr: float = Field(5e-4, gt=0.0)  # QAT learning rate (a tenth of the student's, typically)
    calibration_samples: int = Field(256, ge=1, le=100_000)
    calibration_path: Path | None = None  # folder of unlabelled images; default: the train split
    calibrator: Literal["minmax", "entropy", "percentile"] = "minmax"
    per_channel: bool = True
    # When an INT8 artifact misses its accuracy budget, keep its most quantization-sensitive
    # layers in float, one at a time, until it holds (formats that can mix precisions).
    accuracy_aware: bool = True

    def options(self) -> Int8Options:
        return Int8Options(calibrator=self.calibrator, per_channel=self.per_channel)
