"""What a stage adds to manifest.json and to what people read (the console summary,
report.html, the plots, MODEL_CARD.md, `edgekiln diff`). The release modules walk the
registered stages and call these; none of them names a stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


class Maybe:
    """In a `view` schema: a record the run may not have produced (None when absent, else
    filled by `schema`, release/report_view.py)."""

    def __init__(self, schema: dict):
        self.schema = schema


@dataclass(frozen=True)
class StageReport:
    # (its result or None when it did not run, {check name: record}) -> {manifest key: value}
    manifest: Callable[[Any, dict], dict] | None = None
    # Manifest key -> the type its value must have when a manifest is read (strict; None allowed).
    fields: dict[str, Any] = field(default_factory=dict)
    # Manifest key -> what the reports may read of it (release/report_view.py's schema).
    view: dict[str, Any] = field(default_factory=dict)
    # (the completed manifest, the console) -> prints its tables and notes after the stage table.
    summary: Callable[[dict, Any], None] | None = None
    # A Jinja fragment for report.html (after the stage table); `m` is the completed manifest.
    html: str | None = None
    # (the completed manifest) -> the trade-off plot's points: dicts of kind, name, accuracy,
    # size (bytes), latency (ms), chosen.
    points: Callable[[dict], list[dict]] | None = None
    # (the completed manifest) -> (label, model name or None, details for the model card).
    lineage: Callable[[dict], tuple[str, str | None, str]] | None = None
    # The trade-off plot's marker for each kind of point it adds: {kind: (colour, marker)}.
    styles: dict[str, tuple[str, str]] = field(default_factory=dict)
