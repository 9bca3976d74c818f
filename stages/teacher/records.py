"""The records of stage `teacher`: what its work returns beside its model (StageResult.figures)
and its section of manifest.json. Apart from report.py, so that editing how a report
shows them (its tables, its HTML) leaves the stage's cache key as it is."""

from __future__ import annotations

from typing import Any

from edgekiln.system.records import Items, Number, Record


class TeacherCandidate(Record):
    name: str | None = None
    accuracy: Number | None = None
    params: Number | None = None
    macs: Number | None = None
    input_size: int | None = None
    host_latency_ms: Number | None = None
    chosen: bool | None = None
    why: str | None = None
    score: Number | None = None  # what `select` ranks by
    schedule: dict[str, Any] | None = None  # the epochs it trained and why it stopped
    lr: dict[str, Any] | None = None  # lr = "auto": the range test's record
    zero_shot: dict[str, Any] | None = None  # a `clip:` candidate: its head and prompts


class TeacherFigures(Record):
    """What stage `teacher`'s work returns beside its model(s): the teacher's name, the rule
    it was chosen by, every candidate weighed."""

    name: str | None = None
    select: str | None = None
    candidates: Items[TeacherCandidate] = []
    best_single_accuracy: Number | None = None  # an ensemble: its best member alone


class TeacherRecord(TeacherFigures):
    """manifest.json's `teacher`: the chosen teacher and every candidate weighed, with its
    accuracy on val and test."""

    accuracy: Number | None = None
    test_accuracy: Number | None = None
