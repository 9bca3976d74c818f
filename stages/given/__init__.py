"""Stage `given` (section [model]): the trained classifier a run starts from instead of training a teacher (a
timm architecture with the user's weights, or a transformers image classifier). It is
loaded as trained (every key, every shape: nothing re-initialised), optionally fine-tuned,
and scored; every later drop is measured against it, and pruning recovery and QAT distil from
it (self-distillation), so no labels beyond the splits are needed.

This module declares the stage and imports no torch; the work is in `work.py`."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgekiln.stages import Sections, Check, Stage, register
from edgekiln.training.config import Epochs, TrainConfig

TRANSFORMERS = "hf:"
TIMM_HUB = "hf-hub:"


class ModelConfig(BaseModel):
    """`[model]`: `arch` is a timm name (with `checkpoint`), a timm hub id `hf-hub:org/name`,
    or a transformers image classifier `hf:<hub id or local directory>`."""

    model_config = ConfigDict(extra="forbid")

    arch: str
    checkpoint: Path | None = None  # .safetensors, or .pt/.pth read with weights_only
    # The size it was trained at: default [data] image_size (timm), the image processor's (hf:)
    image_size: int | None = Field(None, ge=16, le=1024)
    # The normalization it was trained with: default timm's for `arch`, the image processor's (hf:)
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    # Score it under the usual alternatives of size and normalization before any stage, and
    # refuse a run whose configured preprocessing is clearly not how it was trained
    check_preprocessing: bool = True
    epochs: Epochs = 0  # fine-tune it on the train split first; 0: use it as given
    max_epochs: int = Field(30, ge=1, le=1000)  # epochs = "auto": the cap
    max_minutes: float | None = Field(None, gt=0)
    lr: float = Field(1e-3, gt=0.0)

    @model_validator(mode="after")
    def _weights_given(self) -> "ModelConfig":
        if self.arch.startswith(TRANSFORMERS):
            if self.checkpoint is not None:
                raise ValueError("a transformers model (hf:) is its directory or hub id: give no `checkpoint`")
        elif self.checkpoint is None and not self.arch.startswith(TIMM_HUB):
            raise ValueError(f"give `checkpoint`, the weights of your trained {self.arch} (.safetensors, .pt or "
                             ".pth); a timm name alone has no classifier for your classes")
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both `mean` and `std`, or neither")
        return self

    @property
    def name(self) -> str:
        return f"{self.arch}@{self.checkpoint.name}" if self.checkpoint else self.arch

    def resolve_paths(self, base: Path) -> None:
        """The checkpoint and a local transformers directory relative to the config file."""
        if self.checkpoint is not None and not self.checkpoint.is_absolute():
            self.checkpoint = (base / self.checkpoint).resolve()
        # resolved before asking: base may be a folder not yet made (compress's OUT)
        if self.arch.startswith(TRANSFORMERS) and (base / self.arch[3:]).resolve().is_dir():
            self.arch = f"{TRANSFORMERS}{(base / self.arch[3:]).resolve()}"

    def input_paths(self) -> list[tuple[str, Path, bool]]:
        """(key, path, is a data folder) of every file it reads."""
        if self.checkpoint is not None:
            return [("checkpoint", Path(self.checkpoint), False)]
        local = Path(self.arch[3:]) if self.arch.startswith(TRANSFORMERS) else None
        return [("arch", local, False)] if local is not None and local.is_absolute() else []


class GivenSections(Sections):
    """What stage `given` reads of the config, each section typed."""

    model: ModelConfig
    train: TrainConfig


def _plan(cfg, model):
    """Its fine-tuning, when [model] epochs asks for one; hands on the given model."""
    from edgekiln.stages.planning import loop

    m = cfg.model
    works = [] if m.epochs == 0 else [loop(f"fine-tune {m.name}", m.arch, m.epochs, m.max_epochs, cfg.train.patience)]
    return works, (m.arch, 1.0)


STAGE = register(Stage(plan=_plan, trains=True, formats=lambda sections: set(),
    name="given", order=5, run="edgekiln.stages.given.work:run", section="model", schema=ModelConfig,
    reads=GivenSections, preflight="edgekiln.stages.given.work:preflight", starts=True, title="the given model",
    checks=(Check("preprocessing_check", "edgekiln.stages.given.precheck:check", "edgekiln.stages.given.precheck:inputs"),),
    report="edgekiln.stages.given.report:REPORT"))
