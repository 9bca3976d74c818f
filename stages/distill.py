"""Stage `distill`: knowledge distillation from the selected teacher(s) into a mobile student."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from edgekiln.stages import modeling, training
from edgekiln.stages.data import Dataset
from edgekiln.stages.errors import InputError
from edgekiln.stages.result import StageResult


class StudentConfig(BaseModel):
    """`[student]`: the mobile architecture to distil into (a timm name)."""

    model_config = ConfigDict(extra="forbid")

    arch: str = "mobilenetv3_small_050"
    pretrained: bool = False
    epochs: int = Field(10, ge=0, le=1000)
    lr: float = Field(3e-3, gt=0.0)


def preflight(config: dict) -> None:
    """Fail fast on a student architecture timm does not know."""
    cfg: StudentConfig = config["student"]
    if not modeling.is_known_arch(cfg.arch):
        raise InputError(f"student.arch: unknown timm architecture {cfg.arch!r}")


def run(data: Dataset, config: dict, inputs: dict[str, StageResult], workdir: Path) -> StageResult:
    cfg: StudentConfig = config["student"]
    kd: training.DistillConfig = config["distill"]
    teachers = inputs["teacher"].bundles
    model = modeling.create(cfg.arch, data.num_classes, pretrained=cfg.pretrained, seed=data.seed,
                            image_size=data.image_size)
    student = modeling.bundle(cfg.arch, model, data.num_classes, data.image_size,
                              source="distilled from " + " + ".join(t.source for t in teachers))
    teacher, hint = training.hinted_teacher(teachers, student, kd)
    training.fit(student, data, cfg.epochs, lr=cfg.lr, seed=data.seed, desc=f"distill {cfg.arch}",
                 train=config["train"], teacher=teacher, hint=hint, kd=kd)
    return StageResult.with_model(training.evaluate(student, data), student, metrics={
        "arch": cfg.arch, "params": modeling.params(model), "macs": modeling.macs(model, student.input_size),
        "feature_loss": kd.feature_loss})
