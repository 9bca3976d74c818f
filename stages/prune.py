"""Stage `prune`: structured channel pruning (torch-pruning) to a MACs ratio, then KD recovery."""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field

from edgekiln.stages import modeling, training
from edgekiln.stages.data import Dataset
from edgekiln.stages.progress import console
from edgekiln.stages.result import StageResult

_MAX_CHANNEL_RATIO = 0.9  # never remove more than this share of any layer's channels
_STEPS = 45  # granularity of the search for the MACs target


class PruneConfig(BaseModel):
    """`[prune]`: keep `macs_ratio` of the student's MACs (1.0 = no pruning)."""

    model_config = ConfigDict(extra="forbid")

    macs_ratio: float = Field(0.5, gt=0.0, le=1.0)
    finetune_epochs: int = Field(3, ge=0, le=1000)
    lr: float = Field(1e-3, gt=0.0)


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


def prune_to_macs(model: torch.nn.Module, input_size: int, ratio: float) -> tuple[int, int]:
    """Prune `model` in place, uniformly per layer by L2 magnitude, in small steps until its
    MACs are at most `ratio` of the original. Returns (MACs before, MACs after)."""
    import torch_pruning as tp

    model.eval()
    example = torch.randn(1, 3, input_size, input_size)
    before, _ = tp.utils.count_ops_and_params(model, example)
    if ratio >= 1.0:
        return int(before), int(before)
    pruner = tp.pruner.MetaPruner(
        model, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=_MAX_CHANNEL_RATIO, iterative_steps=_STEPS, ignored_layers=kept_layers(model),
    )
    after = before
    for _ in range(_STEPS):
        pruner.step()
        after, _ = tp.utils.count_ops_and_params(model, example)
        if after <= ratio * before:
            break
    return int(before), int(after)


def run(data: Dataset, config: dict, inputs: dict[str, StageResult], workdir: Path) -> StageResult:
    cfg: PruneConfig = config["prune"]
    kd: training.DistillConfig = config["distill"]
    student = inputs["distill"].bundle
    before, after = prune_to_macs(student.model, student.input_size, cfg.macs_ratio)
    console.print(f"  MACs {before / 1e6:.2f}M -> {after / 1e6:.2f}M ({after / before:.2f} of the student)")
    # Recovery uses logit KD only: a hint projection would start untrained here.
    teacher = training.Teacher(inputs["teacher"].bundles)
    training.fit(student, data, cfg.finetune_epochs, lr=cfg.lr, seed=data.seed, desc="prune: recovery fine-tune",
                 train=config["train"], teacher=teacher, kd=kd)
    return StageResult.with_model(training.evaluate(student, data), student, metrics={
        "params": modeling.params(student.model), "macs": after, "macs_before": before,
        "macs_ratio": after / before})
