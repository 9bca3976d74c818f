"""The manifest as the reports read it. report.html, MODEL_CARD.md, the console summary, the
plots and JUnit show what a run produced, and many figures are optional: a Core ML artifact
has no latency on Linux, a run without a test split has no intervals, a run that stopped at
a gate has no artifacts. `complete` returns a copy in which every figure a report may read
is present, None (or an empty list) where the run did not produce it, so that each renderer
writes "-" or "not measured" instead of failing on a missing key. The manifest itself is
never changed: what is absent stays absent in the file release tooling reads."""

from __future__ import annotations

import dataclasses
from typing import Any

from edgekiln import stages as registry
from edgekiln.gates import REFERENCE
from edgekiln.stages.report import Maybe as _Maybe
from edgekiln.targets.artifact import Artifact

# A schema is a dict (a record, always present: each of its keys filled by its own schema,
# other keys kept), a _Maybe (a record that may be absent), a one-element list (a list of
# records; an empty list: a list of anything) or a default value (a scalar).
_LATENCY = {"p50": None, "p90": None, "p50_interval": None, "p90_interval": None}
_ENCODING_CHOICE = {"asked": None, "chosen": None, "why": None,
                    "timing": _Maybe({"interleaved": None, "why": None, "rounds": None, "runs_per_round": None,
                                      "runner": None, "device": None, "tool": None, "min_margin": None,
                                      "notes": []}),
                    "candidates": [{"encoding": None, "precision": None, "size_bytes": None, "accuracy": None,
                                    "accuracy_source": None, "p50_ms": None, "latency_source": None,
                                    "median_ms": None, "noise": None, "round_p50_ms": [],
                                    "latency_notes": [], "over_budget": []}]}
_MIXED_PRECISION = {"applied": None, "breach": None, "why_not": None, "outcome": None, "float_layers": [],
                    "steps": []}


def _artifact_schema() -> dict:
    schema: dict[str, Any] = {}
    for f in dataclasses.fields(Artifact):
        if f.default_factory is not dataclasses.MISSING:  # lists and dicts: empty
            schema[f.name] = [] if f.default_factory is list else {}
        else:
            schema[f.name] = None
    schema.update(latency_ms=_Maybe(_LATENCY), encoding_choice=_Maybe(_ENCODING_CHOICE),
                  mixed_precision=_Maybe(_MIXED_PRECISION), student=_Maybe({"name": None, "why": []}),
                  gates=[{}], path=None)
    return schema


SCHEMA: dict[str, Any] = {
    "edgekiln_version": None, "created": None, "passed": None, "verdict": None, "unchecked": [], "error": None,
    "config_sha256": None,
    "config": {"data": {"source": None, "path": None},
               "budget": {"max_drop_total": None, "gate": None}, "targets": [{"name": None}], "card": {},
               "release": None},
    "tool_versions": {}, "compute": _Maybe({"device": None, "name": None}),
    # A manifest written before plans existed ran every stage from the teacher.
    "plan": {"stages": None, "reference": REFERENCE, "reference_title": REFERENCE,
             "skipped": [{"stage": None, "why": None}]},
    "time_budget": _Maybe({"max_minutes": None, "minutes": None, "cut": {}}),
    "splits": _Maybe({"file": None, "sha256": None, "train": None, "val": None, "test": None, "note": None,
               "data_fingerprint": None, "skipped": None}),
    "stages": [{"name": None, "accuracy": None, "drop": None, "budget": None, "passed": None, "cached": None,
                "seconds": None, "params": None, "macs": None, "test_accuracy": None, "test_accuracy_ci": None,
                "test_drop": None, "drop_ci": None, "branch": None}],
    "branches": [{"student": None, "targets": [], "why": []}],
    "gates": [{}], "artifacts": [_artifact_schema()],
    "labels": [],
    "report_errors": {},
}


def _fill(value, schema):
    if isinstance(schema, _Maybe):
        return _fill(value, schema.schema) if isinstance(value, dict) else None
    if isinstance(schema, dict):
        value = value if isinstance(value, dict) else {}
        return {**value, **{key: _fill(value.get(key), sub) for key, sub in schema.items()}}
    if isinstance(schema, list):
        if not isinstance(value, list):
            return []
        return [_fill(v, schema[0]) for v in value] if schema else value
    return schema if value is None else value


def schema() -> dict[str, Any]:
    """SCHEMA with each registered stage's sections (stages/*/report.py)."""
    out = dict(SCHEMA)
    for stage in registry.registered():
        out.update(stage.reporting.view)
    return out


def complete(manifest: dict) -> dict:
    """A copy of `manifest` with every figure the reports read present (None, {} or [] where
    absent). Sections the run may not have produced (a stage's, splits, an artifact's
    latency, encoding choice or mixed precision) stay None."""
    return _fill(manifest, schema())


def lineage(manifest: dict) -> list[tuple[str, str | None, str]]:
    """(what, model name or None, details) from each stage that says where the shipped model
    came from (the teacher, the student, how it was pruned and quantized), in stage order.
    `manifest`: complete's."""
    planned = manifest["plan"]["stages"]  # None: a manifest from before plans, which ran every stage
    return [line for stage in registry.registered() if stage.reporting.lineage
            and (planned is None or stage.name in planned) and (line := stage.reporting.lineage(manifest)) is not None]

