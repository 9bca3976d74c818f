"""The RunRecord: manifest.json read back as one typed object, which every report renders
(release/), `diff` compares and `edgekiln.load` returns. Every figure may be absent or null
(not measured); one that is present has its type, so a reader never meets a string where it
computes with a number, nor a missing key (system/records.py). Each stage declares the
records of the sections it adds (stages/*/report.py); artifacts are targets.ArtifactRecord.
JSON exists only at the file: manifest.json is written from the run (engine/manifest.py)
and read back through `run_record`."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from edgekiln import stages as registry
from edgekiln.engine.config import CardConfig
from edgekiln.gates import REFERENCE
from edgekiln.system.errors import InputError
from edgekiln.system.records import Always, Items, Number, Record
from edgekiln.targets.artifact import AnyGateRecord, ArtifactRecord, StudentReason


class Branch(Record):
    """One branch of a run that forked after its student search: the student, the targets it
    serves, why, the stages it ran and their sections (as a run of its own would have them)."""

    student: str
    targets: Items[str] = []
    why: Items[StudentReason] = []
    primary: bool | None = None
    stages: list[str] | None = None
    sections: dict[str, Any] | None = None


class StageRecord(Record):
    """A stage as it ran: its val accuracy and drop, its test figures, whether its gate held."""

    name: str
    accuracy: Number | None = None
    drop: Number | None = None
    budget: Number | None = None
    passed: bool | None = None
    cached: bool | None = None
    seconds: Number | None = None
    params: Number | None = None
    macs: Number | None = None
    test_accuracy: Number | None = None
    test_accuracy_ci: list[Number] | None = None
    test_drop: Number | None = None
    drop_ci: list[Number] | None = None
    branch: str | None = None  # after a fork: the student of its branch


class Splits(Record):
    file: str | None = None
    sha256: str | None = None
    data_fingerprint: str | None = None
    train: int | None = None
    val: int | None = None
    test: int | None = None
    note: str | None = None
    skipped: dict[str, Any] | None = None  # hidden files in the data that were not read


class Predictions(Record):
    file: str | None = None
    sha256: str | None = None
    split: str | None = None
    targets: list[str] | None = None


class Skipped(Record):
    stage: str | None = None
    why: str | None = None


class PlanRecord(Record):
    """The stages the run planned, the one every drop is measured against, and the others,
    with why. A manifest written before plans ran every stage from the teacher."""

    stages: list[str] | None = None
    reference: str | None = REFERENCE
    reference_title: str | None = REFERENCE
    skipped: Items[Skipped] = []

    @model_validator(mode="before")
    @classmethod
    def _named_reference(cls, data):
        # before, not after, validation: assigning in an after-validator validates the
        # record again (records validate assignment), and so on without end
        if isinstance(data, dict):
            reference = data.get("reference") or REFERENCE
            data = {**data, "reference": reference, "reference_title": data.get("reference_title") or reference}
        return data


class TimeBudgetRecord(Record):
    """`[pipeline] max_minutes`: the budget, what the plan expected of each stage (minutes on
    this machine), the minute of the run each stage's deadline fell on, what the budget cut
    in each stage (empty: nothing), and the run's minutes."""

    max_minutes: Number
    expected_minutes: dict[str, Number] | None = None
    deadline_minute: dict[str, Number] | None = None
    cut: Always[dict[str, list[str]]] = {}
    minutes: Number | None = None
    within: bool | None = None


class Compute(Record):
    device: str | None = None
    name: str | None = None
    world_size: int | None = None
    backend: str | None = None


class GateRecord(Record):
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


class DataOfConfig(Record):
    source: str | None = None
    path: str | None = None


class BudgetOfConfig(Record):
    max_drop_total: Number | None = None
    gate: str | None = None


class TargetOfConfig(Record):
    name: str | None = None


class CardOfConfig(CardConfig):
    """`[card]` as a manifest records it (keys a newer edgekiln added are kept)."""

    model_config = ConfigDict(extra="allow")


class ConfigRecord(Record):
    """The run's config as the manifest records it (every section; the reports read these)."""

    data: Always[DataOfConfig] = Field(default_factory=DataOfConfig)
    budget: Always[BudgetOfConfig] = Field(default_factory=BudgetOfConfig)
    targets: Items[TargetOfConfig] = []
    card: Always[CardOfConfig] = Field(default_factory=CardOfConfig)
    release: dict[str, Any] | None = None


class _RunRecord(Record):
    """manifest.json read back, typed: what every report renders and `edgekiln.load` returns."""

    schema_version: int | None = None  # absent: a manifest written before it had one (version 1)
    edgekiln_version: str | None = None
    created: str | None = None
    config_name: str | None = None
    passed: bool | None = None
    verdict: str | None = None
    unchecked: Items[str] = []
    error: str | None = None
    config: ConfigRecord
    config_sha256: str | None = None
    tool_versions: Always[dict[str, str | None]] = {}
    compute: Compute | None = None
    plan: Always[PlanRecord] = Field(default_factory=PlanRecord)
    time_budget: TimeBudgetRecord | None = None
    splits: Splits | None = None
    predictions: Predictions | None = None
    stages: Items[StageRecord] = []
    branches: Items[Branch] = []
    gates: Items[AnyGateRecord] = []
    artifacts: list[ArtifactRecord]
    labels: Items[str] = []
    report_errors: Always[dict[str, str | None]] = {}
    interrupted: dict[str, Any] | None = None

    @property
    def version(self) -> int:
        return self.schema_version or 1


class ArtifactRecordV2(ArtifactRecord):
    gates: Items[GateRecord] = []


class _RunRecordV2(_RunRecord):
    schema_version: int = Field(ge=2)
    gates: Items[GateRecord] = []
    artifacts: list[ArtifactRecordV2]
    verdict: str
    unchecked: list[str]


@functools.lru_cache(maxsize=16)
def _model(generation: int, version: int) -> type[BaseModel]:
    fields = {key: (annotation, None) for stage in registry.registered()
              for key, annotation in stage.reporting.fields.items()}
    base = _RunRecordV2 if version >= 2 else _RunRecord
    return create_model("RunRecord", __base__=base, __doc__=_DOC, **fields)


_DOC = ("manifest.json of an edgekiln run: the verdict, every gate, each stage's record and every artifact "
        "(accuracies in percent, drops in points, latencies in ms, sizes in bytes).")


def manifest_model(version: int = 2) -> type[BaseModel]:
    """The RunRecord type for the stages registered now (each adds its sections' records);
    `version`: the manifest's schema_version (1 for a manifest without one, read by `diff`
    against older releases)."""
    return _model(registry.generation(), version)


def run_record(manifest: dict, where: Path | str = "manifest.json"):
    """`manifest` (manifest.json's content) as its RunRecord. InputError naming every field
    that has the wrong type (a figure that is text, a list that is a number...) or that a
    record cannot be without (an artifact's target). Absent and null figures are allowed:
    readers show them as not measured."""
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    try:
        return manifest_model(version if isinstance(version, int) and version >= 1 else 1).model_validate(
            manifest, strict=True)
    except ValidationError as e:
        problems = []
        for err in e.errors()[:5]:
            field = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in err["loc"]).lstrip(".")
            if err["type"] == "missing":
                problems.append(f"{field}: missing")
                continue
            value = err.get("input")
            shown = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
            problems.append(f"{field} = {shown[:60]}: {err['msg'].lower()}")
        more = f" (and {e.error_count() - 5} more)" if e.error_count() > 5 else ""
        raise InputError(f"{where} is not a valid edgekiln manifest: " + "; ".join(problems) + more) from None


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
