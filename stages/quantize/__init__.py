"""Stage `quantize`: the student becomes INT8 (PTQ calibrated on representative images, or
QAT), judged on its INT8 simulation; when that breaks the budget, the most sensitive layers
are kept in float one at a time until it holds, and export starts from them.

This module declares the stage and imports no torch; the work is in `work.py`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edgekiln.stages import Sections, Stage, register
from edgekiln.targets.int8 import Int8Options
from edgekiln.training.config import DistillConfig, Epochs, TrainConfig


# The ladder's rungs by cost, cheapest first (seconds, seconds, seconds, a simulation per
# layer, epochs of training); equalization before bias correction, as Nagel et al. apply
# them (the correction is measured on the equalized model). The order was set by cost and
# that paper, not tuned on any data.
RUNGS = ("calibration", "equalization", "bias_correction", "float_layers", "qat")


class QuantizeConfig(BaseModel):
    """`[quantize]`: how the student becomes INT8."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["ptq", "qat"] = "ptq"
    # The format whose INT8 scheme the stage simulates and judges (a format with an INT8
    # simulation: targets/format.py); the artifacts of every format start from its decision.
    simulation: str = "tflite"
    epochs: Epochs = 3  # QAT fine-tuning epochs
    max_epochs: int = Field(10, ge=1, le=1000)  # epochs = "auto": the cap
    max_minutes: float | None = Field(None, gt=0)
    lr: float = Field(5e-4, gt=0.0)  # QAT learning rate (a tenth of the student's, typically)
    calibration_samples: int = Field(256, ge=1, le=100_000)
    calibration_path: Path | None = None  # folder of unlabelled images; default: the train split
    # "unlabelled": a seeded sample of [data] unlabelled_path's or unlabelled_shards' images
    # (the images the app will see, where those are); "train": class-balanced from the train split.
    calibration_from: Literal["train", "unlabelled"] = "train"
    calibrator: Literal["minmax", "entropy", "percentile"] = "minmax"
    per_channel: bool = True
    # When an INT8 artifact misses its accuracy budget, keep its most quantization-sensitive
    # layers in float, one at a time, until it holds (formats that can mix precisions).
    accuracy_aware: bool = True
    # How those layers are kept: "float", or "int16": 16-bit activations with INT8 weights, so
    # the artifact stays integer-only (an NPU or DSP that runs no float op). TFLite only (the
    # other formats keep them float, and say so in the artifact's quantization record). The
    # choice of layers is the same: int16 activations are decided on as float in simulation,
    # and each artifact is measured in its runtime.
    sensitive_layers: Literal["float", "int16"] = "float"
    # When the plain INT8 simulation (PTQ) misses the budget on val, the repairs tried in turn,
    # cheapest first, until one holds: "calibration" (the other activation calibrator:
    # histogram for min-max, min-max for a histogram one), "equalization" (cross-layer
    # equalization of each conv -> ReLU -> conv pair's channel ranges: equalization.py),
    # "bias_correction" (each layer's INT8 mean shift added back to its bias:
    # bias_correction.py), "float_layers" (the above, with accuracy_aware), then "qat" (QAT
    # with distillation, `epochs` and `lr` as for mode = "qat", within the stage's time budget;
    # all layers INT8). "auto": all five; a list: those, in the order given; false: float
    # layers only, as before the ladder.
    ladder: Literal["auto"] | list[Literal["calibration", "equalization", "bias_correction", "float_layers",
                                           "qat"]] | bool = "auto"

    @property
    def rungs(self) -> list[str]:
        """The ladder's rungs after plain PTQ, in order (none with QAT: it is trained, not repaired)."""
        if self.mode == "qat":
            return []
        chosen = (list(RUNGS) if self.ladder in ("auto", True) else
                  ["float_layers"] if self.ladder is False else list(self.ladder))
        return [r for r in chosen if r != "float_layers" or self.accuracy_aware]

    @field_validator("simulation")
    @classmethod
    def _simulates(cls, value: str) -> str:
        from edgekiln.targets.format import simulating_formats

        if value not in simulating_formats():
            raise ValueError(f"{value!r} is not a format with an INT8 simulation; known: "
                             f"{', '.join(simulating_formats())}")
        return value

    @model_validator(mode="after")
    def _one_calibration_source(self) -> "QuantizeConfig":
        if self.calibration_path is not None and self.calibration_from != "train":
            raise ValueError("give calibration_path (a folder) or calibration_from = 'unlabelled', not both")
        return self

    def options(self) -> Int8Options:
        from edgekiln.targets.format import get_format

        return Int8Options(calibrator=self.calibrator, per_channel=self.per_channel,
                           sensitive_as=self.sensitive_layers,
                           qat_scheme=get_format(self.simulation).INT8_SIMULATION)

    def resolve_paths(self, base: Path) -> None:
        """The calibration folder is relative to the config file."""
        if self.calibration_path is not None and not self.calibration_path.is_absolute():
            self.calibration_path = (base / self.calibration_path).resolve()

    def input_paths(self) -> list[tuple[str, Path, bool]]:
        """(key, path, is a data folder) of every file it reads."""
        return [] if self.calibration_path is None else [("calibration_path", Path(self.calibration_path), True)]


class QuantizeSections(Sections):
    """What stage `quantize` reads of the config, each section typed."""

    quantize: QuantizeConfig
    distill: DistillConfig
    train: TrainConfig
    budget: Any = None  # [budget] (engine.config.BudgetConfig); None where the config gives none


def unkeyed(config: QuantizeSections) -> set[str]:
    """PTQ reads the distillation and training recipes only for the ladder's QAT rung;
    [budget] decides only whether PTQ climbs the ladder and when auto QAT may stop."""
    cfg: QuantizeConfig = config.quantize
    trains = cfg.mode == "qat" or "qat" in cfg.rungs
    out = set() if trains else {"distill", "train"}
    reads_budget = bool(cfg.rungs) if cfg.mode == "ptq" else \
        cfg.epochs == "auto" and config.train.stop_when_within_budget
    return out if reads_budget else out | {"budget"}


def _plan(cfg, model):
    """QAT's loop, or PTQ's calibration (seconds) and, with the ladder's QAT rung, QAT's loop
    at most (none expected: it runs only when every cheaper rung misses the budget); hands
    on the same model."""
    from edgekiln.stages.planning import Work, loop

    q, (arch, scale) = cfg.quantize, model
    qat_loop = loop("QAT", arch, q.epochs, q.max_epochs, cfg.train.patience, scale)
    if q.mode == "qat":
        return [qat_loop], model
    rung = [Work("QAT rung (only if the cheaper rungs miss the budget)", arch, 0.0, 0.0, qat_loop.max_epochs,
                 scale=scale)] if "qat" in q.rungs else []
    return [Work("PTQ calibration", seconds=2.0), *rung], model


STAGE = register(Stage(plan=_plan, trains=True, formats=lambda sections: {sections.quantize.simulation},
    name="quantize", order=40, run="edgekiln.stages.quantize.work:run", section="quantize", schema=QuantizeConfig,
    default=QuantizeConfig(), reads=QuantizeSections, preflight="edgekiln.stages.quantize.work:preflight",
    unkeyed=unkeyed, budgeted=True,
    report="edgekiln.stages.quantize.report:REPORT"))
