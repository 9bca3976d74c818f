"""What stage `export` adds to manifest.json and to the reports people read."""

from __future__ import annotations

from edgekiln.stages.export.records import ExportFigures, PreprocessingRecord
from edgekiln.stages.report import StageReport
from edgekiln.system.records import dumped


def _manifest(result, checks: dict) -> dict:
    """What an app must do to an image before feeding any artifact (the artifacts themselves
    are the run's, published by the runner)."""
    preprocessing = None if result is None else result.figures.preprocessing
    return {"preprocessing": None if preprocessing is None else dumped(preprocessing)}


REPORT = StageReport(
    figures=ExportFigures, manifest=_manifest, fields={"preprocessing": PreprocessingRecord | None})
