"""What a stage adds to manifest.json and to what people read (the console summary,
report.html, the plots, MODEL_CARD.md, `edgekiln diff`). The release modules walk the
registered stages and call these; none of them names a stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from edgekiln.system.records import Record


@dataclass(frozen=True)
class StageReport:
    # The record type of its StageResult.figures: what its work returns beside the model (a
    # cached result's figures are read back as it).
    figures: type[Record] = Record
    # (its result or None when it did not run, {check name: record}) -> {manifest key: value}
    manifest: Callable[[Any, dict], dict] | None = None
    # Manifest key -> its record type (a system.records.Record, `| None` when the stage may not
    # have run): part of the RunRecord (engine/manifest_schema.py) that every report reads.
    fields: dict[str, Any] = field(default_factory=dict)
    # (the RunRecord, the console) -> prints its tables and notes after the stage table.
    summary: Callable[[Any, Any], None] | None = None
    # A Jinja fragment for report.html (after the stage table); `m` is the RunRecord.
    html: str | None = None
    # (the RunRecord) -> the trade-off plot's points: dicts of kind, name, accuracy,
    # size (bytes), latency (ms), chosen.
    points: Callable[[Any], list[dict]] | None = None
    # (the RunRecord) -> (label, model name or None, details for the model card).
    lineage: Callable[[Any], tuple[str, str | None, str]] | None = None
    # The trade-off plot's marker for each kind of point it adds: {kind: (colour, marker)}.
    styles: dict[str, tuple[str, str]] = field(default_factory=dict)
