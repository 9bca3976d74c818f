"""`[train]` and `[distill]`: the recipe every training loop uses, and the distillation loss
(schemas only: no torch, so a config validates in well under two seconds)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator

from edgekiln.training import schedule as schedules


# A training loop's length: a number of epochs, or "auto" (training/schedule.py): until the val
# accuracy stops improving, within `max_epochs` and `max_minutes`.
def _epochs(value):
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 1000):
        return value
    raise ValueError(f'must be "auto" or a whole number of epochs from 0 to 1000, not {value!r}')


Epochs = Annotated[int | Literal["auto"], PlainValidator(_epochs)]


# A loop's peak learning rate: a number, or "auto": found by a range test (training/lr_range.py).
def _learning_rate(value):
    if value == "auto" or (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0):
        return value if value == "auto" else float(value)
    raise ValueError(f'must be "auto" or a learning rate above 0, not {value!r}')


LearningRate = Annotated[float | Literal["auto"], PlainValidator(_learning_rate)]



class TrainConfig(BaseModel):
    """`[train]`: the recipe every training loop uses (teacher fine-tune, distillation,
    pruning recovery). Epochs and learning rates stay in each stage's own section."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(64, ge=2, le=4096)
    weight_decay: float = Field(0.05, ge=0.0)
    warmup_epochs: float = Field(1.0, ge=0.0)
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    ema_decay: float | None = Field(None, gt=0.0, lt=1.0)
    randaugment: str | None = None  # a timm RandAugment string, e.g. "rand-m9-mstd0.5"
    mixup: float = Field(0.0, ge=0.0)  # Beta(alpha, alpha) of mixup; 0 = off
    cutmix: float = Field(0.0, ge=0.0)  # Beta(alpha, alpha) of cutmix; 0 = off
    # Random translation of up to this share of the image size each way (edges replicated),
    # applied per image on the device: cheap, and the augmentation small images need most.
    translate: float = Field(0.0, ge=0.0, le=0.5)
    hflip: bool = False  # random horizontal flips (not for digits or text)
    # Training forward passes under bf16 autocast (weights, gradients and optimizer state stay
    # float32), and the channels_last memory layout: for tensor-core GPUs. Off by default:
    # neither is measured on a GPU yet (BENCHMARKS.md); on the CPU both run, slowly.
    autocast: Literal["none", "bf16"] = "none"
    channels_last: bool = False
    # epochs = "auto": stop after `patience` epochs without a val improvement of more than
    # `min_delta` points, keeping the best epoch's weights.
    patience: int = Field(schedules.PATIENCE, ge=1, le=100)
    min_delta: float = Field(schedules.MIN_DELTA, ge=0.0, le=10.0)
    # epochs = "auto" in student loops (distillation, pruning recovery, QAT): also stop as soon
    # as the val accuracy is within the stage's budget less `within_budget_margin` points.
    stop_when_within_budget: bool = False
    within_budget_margin: float = Field(schedules.WITHIN_BUDGET_MARGIN, ge=0.0)

    @property
    def deterministic_inputs(self) -> bool:
        """Every epoch feeds the same images: a teacher's outputs can be computed once."""
        return (self.randaugment is None and self.mixup == 0.0 and self.cutmix == 0.0
                and self.translate == 0.0 and not self.hflip)


class DistillConfig(BaseModel):
    """`[distill]`: loss = (1 - alpha) * CE + alpha * T^2 * KL(teacher || student)
    [+ feature_weight * MSE(hint(student features), teacher features) with FitNets]."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(4.0, gt=0.0)
    alpha: float = Field(0.9, ge=0.0, le=1.0)
    feature_loss: Literal["none", "fitnets"] = "none"
    feature_weight: float = Field(1.0, ge=0.0)
