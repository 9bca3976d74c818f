"""The records of stage `given`: what its work returns beside its model (StageResult.figures)
and its section of manifest.json. Apart from report.py, so that editing how a report
shows them (its tables, its HTML) leaves the stage's cache key as it is."""

from __future__ import annotations

from typing import Any

from edgekiln.system.records import Number, Record


class FineTuned(Record):
    """[model] epochs: how it scored on val before fine-tuning here, and the schedule it trained."""

    val_accuracy_before: Number | None = None
    schedule: dict[str, Any] | None = None


class GivenModelFigures(Record):
    """What stage `given`'s work returns beside the model: the model the user gave and how it
    is fed (where each of its preprocessing figures came from)."""

    name: str | None = None
    arch: str | None = None
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    input_size: int | None = None
    mean: list[Number] | None = None
    std: list[Number] | None = None
    preprocessing_from: dict[str, Any] | None = None
    fine_tuned: FineTuned | None = None  # None: used as given


class GivenModelRecord(GivenModelFigures):
    """manifest.json's `model`: the model the user gave, how it is fed, and its accuracy."""

    accuracy: Number | None = None
    test_accuracy: Number | None = None
    params: Number | None = None
    macs: Number | None = None


class PreprocessingCheck(Record):
    """manifest.json's `preprocessing_check`: the model scored on val under the configured
    preprocessing and its alternatives, and the verdict (or why it was skipped)."""

    skipped: str | None = None
    cached: bool | None = None
    images: int | None = None
    configured: dict[str, Any] | None = None
    best: dict[str, Any] | None = None
    screened_on: int | None = None
    screened: dict[str, Number] | None = None
    verdict: str | None = None
    seconds: Number | None = None
