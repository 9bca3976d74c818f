"""The types of the manifest's fields that `diff`, `check` and `report` read. Every figure
may be absent or null (not measured); one that is present has its type, so a reader never
meets a string where it computes with a number."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

Number = float  # strict validation still takes an int for a float


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow")


class Latency(_Record):
    p50: Number | None = None
    p90: Number | None = None
    p50_interval: list[Number] | None = None


class ArtifactRecord(_Record):
    target: str
    format: str
    path: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    encoding: str | None = None
    io: str | None = None
    profile: str | None = None
    device: str | None = None
    threads: int | None = None
    accuracy: Number | None = None
    accuracy_source: str | None = None
    test_accuracy: Number | None = None
    test_accuracy_source: str | None = None
    test_accuracy_ci: list[Number] | None = None
    test_drop: Number | None = None
    drop_ci: list[Number] | None = None
    latency_ms: Latency | None = None
    latency_source: str | None = None
    peak_memory_mb: Number | None = None
    cost_features: dict[str, Any] | None = None
    budget: dict[str, Number | None] | None = None
    passed: bool | None = None
    gates: list[dict[str, Any]] | None = None
    budgets_not_checked: list[str] | None = None


class Stage(_Record):
    name: str
    accuracy: Number | None = None
    test_accuracy: Number | None = None
    test_accuracy_ci: list[Number] | None = None
    drop: Number | None = None
    passed: bool | None = None
    cached: bool | None = None


class Teacher(_Record):
    name: str | None = None
    accuracy: Number | None = None
    test_accuracy: Number | None = None
    candidates: list[dict[str, Any]] | None = None


class Splits(_Record):
    file: str | None = None
    sha256: str | None = None
    data_fingerprint: str | None = None
    train: int | None = None
    val: int | None = None
    test: int | None = None


class Predictions(_Record):
    file: str | None = None
    sha256: str | None = None
    split: str | None = None
    targets: list[str] | None = None


class RunManifest(_Record):
    edgekiln_version: str | None = None
    passed: bool | None = None
    error: str | None = None
    config: dict[str, Any]
    config_sha256: str | None = None
    tool_versions: dict[str, str | None] | None = None
    teacher: Teacher | None = None
    student: dict[str, Any] | None = None
    splits: Splits | None = None
    predictions: Predictions | None = None
    stages: list[Stage] | None = None
    gates: list[dict[str, Any]] | None = None
    artifacts: list[ArtifactRecord]
    preprocessing: dict[str, Any] | None = None
    labels: list[str] | None = None
    report_errors: dict[str, str | None] | None = None
