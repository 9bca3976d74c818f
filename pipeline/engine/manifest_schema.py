"""The types of the manifest's fields that `diff`, `check` and `report` read. Every figure
may be absent or null (not measured); one that is present has its type, so a reader never
meets a string where it computes with a number. Each stage declares the types of the
sections it adds (stages/*/report.py)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from edgekiln import stages as registry

Number = float  # strict validation still takes an int for a float


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow")


class Latency(_Record):
    p50: Number | None = None
    p90: Number | None = None
    p50_interval: list[Number] | None = None


class StudentOfTarget(_Record):
    """With a student per group of targets: the student an artifact was built from, and why."""

    name: str
    why: list[dict[str, Any]] | None = None


class Branch(_Record):
    """One branch of a run that forked after its student search: the student, the targets it
    serves, why, the stages it ran and their sections (as a run of its own would have them)."""

    student: str
    targets: list[str]
    why: list[dict[str, Any]] | None = None
    primary: bool | None = None
    stages: list[str] | None = None
    sections: dict[str, Any] | None = None


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
    student: StudentOfTarget | None = None


class Stage(_Record):
    name: str
    accuracy: Number | None = None
    test_accuracy: Number | None = None
    test_accuracy_ci: list[Number] | None = None
    drop: Number | None = None
    passed: bool | None = None
    cached: bool | None = None
    branch: str | None = None  # after a fork: the student of its branch


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


class TimeBudgetRecord(_Record):
    """`[pipeline] max_minutes`: the budget, what the plan expected of each stage (minutes on
    this machine), the minute of the run each stage's deadline fell on, what the budget cut
    in each stage (empty: nothing), and the run's minutes."""

    max_minutes: Number
    expected_minutes: dict[str, Number] | None = None
    deadline_minute: dict[str, Number] | None = None
    cut: dict[str, list[str]] | None = None
    minutes: Number | None = None
    within: bool | None = None


class GateRecord(_Record):
    """One gate of the run: what it judged (`subject_type` stage, target or run, and the
    `subject`'s name), the `metric` in its `unit`, the `value` measured (None when not
    measured) against the budget's `limit`, and its `status`. Accuracy gates add the two
    accuracies and the drop's interval; resource budgets their source; one not checked, why."""

    kind: Literal["accuracy", "latency", "memory", "size"]
    subject_type: Literal["stage", "target", "run"]
    subject: str
    metric: str
    unit: str
    value: Number | None
    limit: Number
    status: Literal["passed", "failed", "not_checked"]
    budget_key: str
    passed: bool | None = None


class _RunManifest(_Record):
    schema_version: int | None = None  # absent: a manifest written before it had one (version 1)
    edgekiln_version: str | None = None
    passed: bool | None = None
    verdict: str | None = None
    unchecked: list[str] | None = None
    error: str | None = None
    config: dict[str, Any]
    config_sha256: str | None = None
    tool_versions: dict[str, str | None] | None = None
    plan: PlanRecord | None = None
    time_budget: TimeBudgetRecord | None = None
    splits: Splits | None = None
    predictions: Predictions | None = None
    stages: list[Stage] | None = None
    branches: list[Branch] | None = None
    gates: list[dict[str, Any]] | None = None
    artifacts: list[ArtifactRecord]
    labels: list[str] | None = None
    report_errors: dict[str, str | None] | None = None


class ArtifactRecordV2(ArtifactRecord):
    gates: list[GateRecord] | None = None


class _RunManifestV2(_RunManifest):
    schema_version: int = Field(ge=2)
    gates: list[GateRecord]
    artifacts: list[ArtifactRecordV2]
    verdict: str
    unchecked: list[str]


@functools.lru_cache(maxsize=16)
def _model(generation: int, version: int) -> type[BaseModel]:
    fields = {key: (annotation, None) for stage in registry.registered()
              for key, annotation in stage.reporting.fields.items()}
    base = _RunManifestV2 if version >= 2 else _RunManifest
    return create_model("RunManifest", __base__=base, __doc__=_DOC, **fields)


_DOC = ("manifest.json of an edgekiln run: the verdict, every gate, each stage's record and every artifact "
        "(accuracies in percent, drops in points, latencies in ms, sizes in bytes).")


def manifest_model(version: int = 2) -> type[BaseModel]:
    """The manifest's schema for the stages registered now; `version`: the manifest's
    schema_version (1 for a manifest without one, read by `diff` against older releases)."""
    return _model(registry.generation(), version)


def json_schema() -> dict:
    """The JSON Schema of manifest.json (this schema_version) that edgekiln ships as
    edgekiln/schemas/manifest.schema.json."""
    from edgekiln.engine.manifest import SCHEMA_VERSION

    schema = manifest_model(SCHEMA_VERSION).model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema,
            "title": f"edgekiln manifest.json, schema_version {SCHEMA_VERSION}"}


SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schemas" / "manifest.schema.json"


if __name__ == "__main__":  # python -m edgekiln.engine.manifest_schema: rewrite the shipped file
    SCHEMA_FILE.write_text(json.dumps(json_schema(), indent=2) + "\n")
    print(SCHEMA_FILE)
