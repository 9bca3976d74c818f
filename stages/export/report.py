"""What stage `export` adds to manifest.json and to the reports people read."""

from __future__ import annotations

from typing import Any

from edgekiln.stages.report import Maybe, StageReport


def _manifest(result, checks: dict) -> dict:
    """What an app must do to an image before feeding any artifact (the artifacts themselves
    are the run's, published by the runner)."""
    return {"preprocessing": None if result is None else result.metrics["preprocessing"]}


REPORT = StageReport(
    manifest=_manifest, fields={"preprocessing": dict[str, Any] | None},
    view={"preprocessing": Maybe({"image_size": None, "mean": None, "std": None})})
