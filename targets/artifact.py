"""The typed record of one artifact: built once by the export stage, completed by the test
grading and the gates, and read by the gates, the choice of encodings, the manifest, `check`
and the report. Its `to_dict` is the manifest's artifact record (the release contract)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from edgekiln.system.records import Always, Items, Number, Record


@dataclass
class Artifact:
    # what it is
    target: str
    format: str
    file: str  # name in the stage's directory (the manifest's `path` once published)
    encoding: str = "int8"
    io: str | None = None  # how an app feeds it (the format's IO_MODES)
    interface: dict | None = None  # what exactly an app feeds it and gets back
    precision: str = "int8"  # as the cost model counts bytes
    runtime: str = ""
    threads: int = 1
    # the profile it is measured on, and its budgets
    profile: str | None = None
    budget: dict = field(default_factory=dict)
    budget_keys: dict = field(default_factory=dict)  # where each budget was set, for gate messages
    estimate_gate: str = "interval"  # how a latency budget treats an estimate: "interval" (its upper end) or "point"
    profile_file: str | None = None
    cost_features: dict = field(default_factory=dict)
    convert_seconds: float = 0.0
    quantization: dict = field(default_factory=dict)  # what the converter applied
    size_bytes: int = 0
    # accuracy on val, in its runtime (or the format's proxy where none runs here)
    accuracy: float = 0.0
    accuracy_source: str = "runtime"
    agreement: float | None = None  # top-1 agreement with the torch model, percent
    accuracy_not_measured: str | None = None
    # latency and memory on the profile, and where each figure comes from
    latency_ms: dict | None = None
    latency_source: str | None = None  # host | device | estimate
    latency_runner: str | None = None
    device: str | None = None
    latency_tool: str | None = None
    peak_memory_mb: float | None = None
    latency_notes: list[str] = field(default_factory=list)
    latency_detail: dict | None = None
    # how it came to be this way
    # A student per group of targets: the student it was built from, and why that one for
    # this target ({name, why}); None when one student serves every target.
    student: dict | None = None
    structure: dict | None = None  # the format's structure check
    int8_accuracy: float | None = None  # before accuracy-aware quantization kept layers float
    mixed_precision: dict | None = None
    encoding_choice: dict | None = None
    # the held-out test split (set by the grader)
    test_accuracy: float | None = None
    test_accuracy_source: str | None = None
    test_agreement: float | None = None
    test_accuracy_not_measured: str | None = None
    test_top1: list[int] | None = None  # per-image predictions: cached, never published
    test_accuracy_ci: list[float] | None = None
    test_drop: float | None = None
    drop_ci: list[float] | None = None
    drop_test: dict | None = None
    # the gates' outcome (set by the runner)
    passed: bool | None = None
    gates: list[dict] = field(default_factory=list)
    budgets_not_checked: list[str] = field(default_factory=list)
    # set when published
    path: str | None = None
    sha256: str | None = None

    @property
    def p50_ms(self) -> float | None:
        return (self.latency_ms or {}).get("p50")

    def update(self, values: dict[str, Any]) -> None:
        """Set fields from a dict of field values (a runtime measurement, a latency record)."""
        for key, value in values.items():
            if key not in _FIELDS:
                raise KeyError(f"Artifact has no field {key!r}")
            setattr(self, key, value)

    def to_dict(self, published: bool = False) -> dict:
        """The record as JSON (fields left unset are omitted). `published`: the manifest's
        record, without the per-image predictions and the cache file name."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if v is not None or k in _ALWAYS}
        if published:
            for key in UNPUBLISHED:
                out.pop(key, None)
        return out

    @classmethod
    def from_dict(cls, record: dict) -> "Artifact":
        """An Artifact from its record (a cached stage result or a manifest); keys it does
        not know are ignored, so an older manifest still reads."""
        known = {k: v for k, v in record.items() if k in _FIELDS}
        known.setdefault("file", record.get("path", ""))
        return cls(**known)


_FIELDS = {f.name for f in dataclasses.fields(Artifact)}
# Always in the record, even when None: a reader can tell "not measured" from "not recorded".
_ALWAYS = {"latency_ms", "latency_source", "peak_memory_mb", "agreement", "profile_file"}
# What the published record leaves out of an Artifact: the per-image predictions (cached,
# never published) and the cache file name (the record has `path`).
UNPUBLISHED = ("test_top1", "file")


# ---- The published record: what manifest.json holds of an artifact, read back typed ----


class Latency(Record):
    p50: Number | None = None
    p90: Number | None = None
    p50_interval: list[Number] | None = None
    p90_interval: list[Number] | None = None


class EncodingTiming(Record):
    """How the encodings were timed against each other (interleaved rounds, or why not)."""

    interleaved: bool | None = None
    why: str | None = None
    rounds: int | None = None
    runs_per_round: int | None = None
    runner: str | None = None
    device: str | None = None
    tool: str | None = None
    min_margin: Number | None = None
    notes: Items[str] = []


class EncodingCandidate(Record):
    encoding: str | None = None
    precision: str | None = None
    size_bytes: int | None = None
    accuracy: Number | None = None
    accuracy_source: str | None = None
    p50_ms: Number | None = None
    latency_source: str | None = None
    median_ms: Number | None = None
    noise: Number | None = None
    round_p50_ms: Items[Number] = []
    latency_notes: Items[str] = []
    over_budget: Items[str] = []


class EncodingChoice(Record):
    """`encoding = "auto"`: what was asked, what ships and why, and every candidate tried."""

    asked: str | list[str] | None = None  # "auto", or the encodings to choose from
    chosen: str | None = None
    why: str | None = None
    timing: EncodingTiming | None = None
    candidates: Items[EncodingCandidate] = []


class MixedPrecisionStep(Record):
    float_layers: int | None = None
    layer: str | None = None
    accuracy: Number | None = None
    accuracy_source: str | None = None
    breach: str | None = None
    note: str | None = None
    logit_mse: Number | None = None


class RankedLayer(Record):
    """A layer, by how far it alone in INT8 moves the logits."""

    layer: str
    logit_mse: Number | None = None


class MixedPrecision(Record):
    """Layers kept in float where INT8 broke the budget: whether it was applied, which, why."""

    applied: bool | None = None
    breach: str | None = None
    why_not: str | None = None
    outcome: str | None = None
    sensitivity: str | None = None
    held: bool | None = None
    # Worst first; a manifest from before the ranking had its figures names only.
    ranking: Items[RankedLayer | str] = []
    float_layers: Items[str] = []
    steps: Items[MixedPrecisionStep] = []


class StudentReason(Record):
    """Why a student serves a group of targets: its targets, the profile it was timed on, why."""

    targets: Items[str] = []
    profile: str | None = None
    why: str | None = None
    latency_ms: Number | None = None
    latency_source: str | None = None


class StudentOfTarget(Record):
    """With a student per group of targets: the student an artifact was built from, and why."""

    name: str
    why: Items[StudentReason] = []


class AnyGateRecord(Record):
    """A gate record of any manifest's schema version: what every report reads of it (a
    schema_version 2 record is engine.manifest_schema.GateRecord, every field required)."""

    subject: str | None = None
    budget_key: str | None = None
    status: str | None = None
    passed: bool | None = None


class ArtifactRecord(Record):
    """An artifact as manifest.json publishes it (Artifact.to_dict(published=True)), read
    back: every field of Artifact but the per-image predictions and the cache file name, its
    parts typed. tests/test_manifest_schema.py keeps the two in step."""

    target: str
    format: str
    encoding: str | None = None
    io: str | None = None
    interface: dict[str, Any] | None = None
    precision: str | None = None
    runtime: str | None = None
    threads: int | None = None
    profile: str | None = None
    budget: Always[dict[str, Number | None]] = {}
    budget_keys: Always[dict[str, Any]] = {}
    estimate_gate: str | None = None
    profile_file: str | None = None
    cost_features: Always[dict[str, Any]] = {}
    convert_seconds: Number | None = None
    quantization: Always[dict[str, Any]] = {}
    size_bytes: int | None = None
    accuracy: Number | None = None
    accuracy_source: str | None = None
    agreement: Number | None = None
    accuracy_not_measured: str | None = None
    latency_ms: Latency | None = None
    latency_source: str | None = None
    latency_runner: str | None = None
    device: str | None = None
    latency_tool: str | None = None
    peak_memory_mb: Number | None = None
    latency_notes: Items[str] = []
    latency_detail: dict[str, Any] | None = None
    student: StudentOfTarget | None = None
    structure: dict[str, Any] | None = None
    int8_accuracy: Number | None = None
    mixed_precision: MixedPrecision | None = None
    encoding_choice: EncodingChoice | None = None
    test_accuracy: Number | None = None
    test_accuracy_source: str | None = None
    test_agreement: Number | None = None
    test_accuracy_not_measured: str | None = None
    test_accuracy_ci: list[Number] | None = None
    test_drop: Number | None = None
    drop_ci: list[Number] | None = None
    drop_test: dict[str, Any] | None = None
    passed: bool | None = None
    gates: Items[AnyGateRecord] = []
    budgets_not_checked: Items[str] = []
    path: str | None = None
    sha256: str | None = None

    @property
    def p50_ms(self) -> float | None:
        return None if self.latency_ms is None else self.latency_ms.p50

