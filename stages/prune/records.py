"""The records of stage `prune`: what its work returns beside its model (StageResult.figures)
and its section of manifest.json. Apart from report.py, so that editing how a report
shows them (its tables, its HTML) leaves the stage's cache key as it is."""

from __future__ import annotations

from typing import Any

from edgekiln.system.records import Items, Number, Record


class PruneStep(Record):
    step: int | None = None
    params: Number | None = None
    macs: Number | None = None
    latency_ms: Number | None = None
    latency_source: str | None = None
    accuracy: Number | None = None
    note: str | None = None


class PruneRecord(Record):
    """manifest.json's `prune` (and what the stage's work returns beside its model): the
    target, the importance, each step and why it stopped."""

    target: dict[str, Any] | None = None
    importance: str | None = None
    steps: Items[PruneStep] = []
    stopped: str | None = None
    recovery_distils_from: str | None = None
    self_distillation: bool | None = None
    macs_before: Number | None = None  # the student's, before the first step
    macs_ratio: Number | None = None  # after the last step kept, of macs_before
