"""The records of stage `distill`: what its work returns beside its model (StageResult.figures)
and its section of manifest.json. Apart from report.py, so that editing how a report
shows them (its tables, its HTML) leaves the stage's cache key as it is."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from edgekiln.system.records import Items, Number, Record


class StudentCandidate(Record):
    """A student the search weighed: trained (its val accuracy) or dropped by the pre-check."""

    name: str | None = None
    accuracy: Number | None = None
    epochs_trained: int | None = None
    params: Number | None = None
    macs: Number | None = None
    int8_bytes: Number | None = None
    latency_ms: Number | None = None
    latency_by_group: dict[str, Number | None] | None = None
    chosen: bool | None = None
    why: str | None = None
    chosen_for: Items[str] = []  # a student per group of targets: the targets it was chosen for
    rounds: Items[dict[str, Any]] = []  # the search's rounds it trained in: epochs, accuracy
    round_schedule: dict[str, Any] | None = None  # epochs = "auto": its last round's schedule
    schedule: dict[str, Any] | None = None  # epochs = "auto", the chosen: its whole schedule
    steps: int | None = None
    lr: dict[str, Any] | None = None  # lr = "auto": the range test's record
    unlabelled_seen: int | None = None
    teacher_outputs: dict[str, Any] | None = None  # what the teacher cost its loop


class MissedBudget(Record):
    """No student reached the budget: the closest, by how much, and what to try."""

    closest: str | None = None
    val_accuracy: Number | None = None
    short_by: Number | None = None
    needed: Number | None = None
    try_: Items[str] = Field(default=[], alias="try")


class StudentRecord(Record):
    """manifest.json's `student`: the chosen student and every candidate of the search."""

    name: str | None = None
    select: str | None = None
    profile: str | None = None  # the latency profile `select` ranked by
    per_target: bool | None = None  # a student per group of targets
    groups: Items[dict[str, Any]] = []  # per_target: each group's profile, targets, latency source
    train_images: int | None = None
    schedule: Any = None  # the search's rounds
    epochs_spent: int | None = None
    epochs_if_each_trained_fully: int | None = None
    within_budget: bool | None = None
    missed_budget: MissedBudget | None = None
    auto: dict[str, Any] | None = None  # epochs = "auto": the chosen one's schedule
    candidates: Items[StudentCandidate] = []
    unlabelled: dict[str, Any] | None = None


class DistillFigures(Record):
    """What stage `distill`'s work returns beside its student(s): the student's architecture,
    the feature loss it distilled with, and the search (`student`)."""

    arch: str | None = None
    feature_loss: str | None = None
    student: StudentRecord | None = None


class PrecheckRecord(Record):
    """manifest.json's `precheck`: each candidate converted to each format before training,
    and the candidates dropped (why)."""

    cached: bool | None = None
    skipped: str | None = None
    targets: Items[Record] = []
    dropped: Items[Record] = []
