"""The records of stage `quantize`: what its work returns beside its model (StageResult.figures)
and its section of manifest.json. Apart from report.py, so that editing how a report
shows them (its tables, its HTML) leaves the stage's cache key as it is."""

from __future__ import annotations

from typing import Any

from edgekiln.targets.artifact import MixedPrecision
from edgekiln.system.records import Items, Number, Record


class Calibration(Record):
    count: int | None = None
    source: str | None = None
    files: Items[str] = []  # calibration_path: the images it read


class QatRecord(Record):
    epochs: int | None = None
    accuracy: Number | None = None
    float_accuracy: Number | None = None
    lr: Any = None
    seconds: Number | None = None
    distils_from: str | None = None  # the stage whose model it distilled from
    schedule: dict[str, Any] | None = None


class LayerSqnr(Record):
    layer: str
    sqnr_db: Number | None = None
    worst_channel_db: Number | None = None
    in_float: bool | None = None


class BiasCorrection(Record):
    """The bias-correction rung: the layers whose INT8 mean shift went back into a bias."""

    layers_corrected: int | None = None
    layers_without_a_bias: Items[str] = []
    largest_shift: dict[str, Any] | None = None  # its layer and value
    images: int | None = None


class Equalization(Record):
    """The equalization rung: the conv -> conv pairs whose channel ranges it balanced."""

    pairs: int | None = None
    layers: Items[str] = []  # "first -> second" per pair
    rounds: int | None = None
    largest_scale: Number | None = None


class LadderStep(BiasCorrection):
    """One rung tried: what it did, the val accuracy it reached, the budget it still broke
    (a bias-correction rung also says what it corrected)."""

    rung: str
    accuracy: Number | None = None
    breach: str | None = None
    seconds: Number | None = None
    kept: bool | None = None
    calibrator: str | None = None  # plain and calibration: the calibrator configured or tried
    calibrator_used: str | None = None  # the calibration rung: as the simulation names it
    float_layers: int | None = None  # the float-layers rung: how many
    epochs: int | None = None  # the QAT rung
    pairs: int | None = None  # the equalization rung: the layer pairs it equalized


class Ladder(Record):
    rungs: Items[str] = []
    steps: Items[LadderStep] = []
    stopped: str | None = None
    summary: str | None = None


class QuantizeRecord(Record):
    """manifest.json's `quantize` (and what the stage's work returns beside its model): the
    scheme, calibration, what QAT and the repair ladder did, the layers kept in float and
    each layer's INT8 SQNR."""

    mode: str | None = None
    scheme: str | None = None
    simulation: str | None = None
    calibration: Calibration | None = None
    calibrator: str | None = None
    simulation_calibrator: str | None = None
    per_channel: bool | None = None
    ptq_accuracy: Number | None = None
    qat: QatRecord | None = None
    mixed_precision: MixedPrecision | None = None
    layers: Items[LayerSqnr] = []
    layers_method: str | None = None
    ladder: Ladder | None = None
    calibrator_chosen: str | None = None  # the calibration rung kept another calibrator
    equalization: Equalization | None = None  # the equalization rung was kept
    bias_correction: BiasCorrection | None = None  # the bias-correction rung was kept
