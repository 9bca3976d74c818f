"""The types of the manifest's fields that `diff`, `check` and `report` read. Every figure
may be absent or null (not measured); one that is present has its type, so a reader never
meets a string where it computes with a number. Each stage declares the types of the
sections it adds (stages/*/report.py)."""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel, ConfigDict, create_model

from edgekiln import stages as registry

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


class PlanRecord(_Record):
    stages: list[str] | None = None
    reference: str | None = None
    reference_title: str | None = None
    skipped: list[dict[str, str]] | None = None


class _RunManifest(_Record):
    edgekiln_version: str | None = None
    passed: bool | None = None
    verdict: str | None = None
    unchecked: list[str] | None = None
    error: str | None = None
    config: dict[str, Any]
    config_sha256: str | None = None
    tool_versions: dict[str, str | None] | None = None
    plan: PlanRecord | None = None
    splits: Splits | None = None
    predictions: Predictions | None = None
    stages: list[Stage] | None = None
    gates: list[dict[str, Any]] | None = None
    artifacts: list[ArtifactRecord]
    labels: list[str] | None = None
    report_errors: dict[str, str | None] | None = None


@functools.lru_cache(maxsize=8)
def _model(generation: int) -> type[BaseModel]:
    fields = {key: (annotation, None) for stage in registry.registered()
              for key, annotation in stage.reporting.fields.items()}
    return create_model("RunManifest", __base__=_RunManifest, **fields)


def manifest_model() -> type[BaseModel]:
    """The manifest's schema for the stages registered now."""
    return _model(registry.generation())
