"""The records of stage `export`: what its work returns beside its model (StageResult.figures)
and its section of manifest.json. Apart from report.py, so that editing how a report
shows them (its tables, its HTML) leaves the stage's cache key as it is."""

from __future__ import annotations

from edgekiln.system.records import Items, Number, Record


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
