"""Stage `teacher`: fine-tune every candidate teacher on the data, score it, keep the best."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from edgekiln.stages import modeling, training
from edgekiln.stages.data import Dataset
from edgekiln.stages.errors import InputError
from edgekiln.stages.progress import console
from edgekiln.stages.result import StageResult

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth")


class TeacherCandidate(BaseModel):
    """A candidate given as a table: a timm architecture and, optionally, local weights."""

    model_config = ConfigDict(extra="forbid")

    arch: str
    checkpoint: Path | None = None

    @property
    def name(self) -> str:
        return f"{self.arch}@{self.checkpoint.name}" if self.checkpoint else self.arch


class TeacherConfig(BaseModel):
    """`[teacher]`: candidates are timm names or {arch, checkpoint} tables."""

    model_config = ConfigDict(extra="forbid")

    candidates: list[str | TeacherCandidate] = Field(min_length=1)
    pretrained: bool = False
    epochs: int = Field(5, ge=0, le=1000)
    lr: float = Field(3e-3, gt=0.0)

    def resolved(self) -> list[TeacherCandidate]:
        return [c if isinstance(c, TeacherCandidate) else TeacherCandidate(arch=c) for c in self.candidates]


def preflight(config: dict) -> None:
    """Fail fast, before any training, on a candidate that cannot be loaded."""
    cfg: TeacherConfig = config["teacher"]
    for i, cand in enumerate(cfg.resolved()):
        key = f"teacher.candidates[{i}]"
        if cand.arch.endswith(CHECKPOINT_SUFFIXES):
            raise InputError(f"{key}: {cand.arch!r} is a file; give it as {{arch = \"<timm name>\", "
                             f"checkpoint = \"{cand.arch}\"}}")
        if not modeling.is_known_arch(cand.arch):
            raise InputError(f"{key}: unknown timm architecture {cand.arch!r}")
        if cand.checkpoint is not None:
            modeling.load_checkpoint(modeling.create(cand.arch, num_classes=2), cand.checkpoint)


def run(data: Dataset, config: dict, inputs: dict[str, StageResult], workdir: Path) -> StageResult:
    cfg: TeacherConfig = config["teacher"]
    scored = []
    for cand in cfg.resolved():
        model = modeling.create(cand.arch, data.num_classes, pretrained=cfg.pretrained and not cand.checkpoint,
                                 seed=data.seed)
        note = ""
        if cand.checkpoint is not None:
            skipped = modeling.load_checkpoint(model, cand.checkpoint)
            note = f" (new head: {len(skipped)} tensors re-initialised)" if skipped else ""
        bundle = modeling.bundle(cand.arch, model, data.num_classes, data.image_size, source=cand.name)
        training.fit(bundle, data, cfg.epochs, lr=cfg.lr, seed=data.seed, desc=f"teacher {cand.name}")
        acc = training.evaluate(bundle, data)
        scored.append((acc, bundle, {"name": cand.name, "accuracy": acc, "params": modeling.params(model),
                                     "macs": modeling.macs(model, bundle.input_size)}))
        console.print(f"  candidate {cand.name}: {acc:.2f}%{note}")
    # Best accuracy wins; ties go to the smaller model.
    best_acc, best, best_record = max(scored, key=lambda s: (s[0], -s[2]["params"]))
    for _, bundle, record in scored:
        record["chosen"] = bundle is best
    return StageResult.with_model(best_acc, best, metrics={
        "name": best.source, "candidates": [r for _, _, r in scored],
        "params": best_record["params"], "macs": best_record["macs"]})
