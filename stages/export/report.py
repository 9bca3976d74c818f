"""What stage `export` adds to manifest.json and to the reports people read."""

from __future__ import annotations

from edgekiln.stages.report import StageReport
from edgekiln.system.records import Items, Number, Record, dumped


class PreprocessingRecord(Record):
    """manifest.json's `preprocessing`: what an app does to an image before any artifact."""

    image_size: int | None = None
    layout: str | None = None
    color: str | None = None
    scale: str | None = None
    mean: list[Number] | None = None
    std: list[Number] | None = None
    describes: str | None = None


class ExportFigures(Record):
    """What stage `export`'s work returns beside its artifacts (which are typed on their own,
    StageResult.artifacts): the preprocessing every artifact starts from, the class labels."""

    preprocessing: PreprocessingRecord | None = None
    labels: Items[str] = []


def _manifest(result, checks: dict) -> dict:
    """What an app must do to an image before feeding any artifact (the artifacts themselves
    are the run's, published by the runner)."""
    preprocessing = None if result is None else result.figures.preprocessing
    return {"preprocessing": None if preprocessing is None else dumped(preprocessing)}


REPORT = StageReport(
    figures=ExportFigures, manifest=_manifest, fields={"preprocessing": PreprocessingRecord | None})
