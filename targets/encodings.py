"""Latency-aware encoding: INT8 is not always the fastest artifact (x86 without VNNI runs
fp32 faster; phones run INT8 faster). A target whose `encoding` is "auto" or a list gets
each candidate encoding built, measured on its own profile, and the fastest one that meets
the accuracy and size budgets ships. Without `encoding`, a target gets INT8 as [quantize] asks."""

from __future__ import annotations

from typing import Callable

from edgekiln.targets.artifact import Artifact

DEFAULT = "int8"
DESCRIPTION = {"fp32": "float32", "fp16": "float16 weights", "int8": "INT8", "dynamic": "dynamic-range INT8"}


def candidates(encoding: str | list[str] | None, supported: dict[str, str]) -> list[str]:
    """The encodings a target asks for, in order: "auto" means every one its format supports."""
    if encoding is None:
        return [DEFAULT]
    if encoding == "auto":
        return list(supported)
    return list(encoding)


def unsupported(encoding: str | list[str] | None, supported: dict[str, str]) -> list[str]:
    """The listed encodings that the target's format cannot write."""
    return [] if encoding is None or encoding == "auto" else [e for e in encoding if e not in supported]


def failures(record: Artifact, breach: Callable[[float], str | None]) -> list[str]:
    """Why a candidate may not ship: it breaks the accuracy budget or the size budget."""
    out = []
    why = breach(record.accuracy)
    if why is not None:
        out.append(f"accuracy {record.accuracy:.2f}%: {why}")
    size_mb = record.budget.get("size_mb")
    if size_mb is not None and record.size_bytes / 1e6 > size_mb:
        out.append(f"size {record.size_bytes / 1e6:.2f} MB > {record.budget_keys['size_mb']} = {size_mb:g}")
    return out


def choose(records: list[Artifact], breach: Callable[[float], str | None]) -> tuple[int, str]:
    """Index of the candidate to ship, and why: the lowest p50 latency among those within the
    accuracy and size budgets. Candidates whose latency could not be measured nor estimated
    rank after the others (by size). When none is within budget, the most accurate ships
    (then the smallest), and the gates fail it."""
    failing = [failures(r, breach) for r in records]
    eligible = [i for i, f in enumerate(failing) if not f]
    if not eligible:
        best = max(range(len(records)), key=lambda i: (records[i].accuracy, -records[i].size_bytes))
        return best, ("no candidate meets the budgets; the most accurate ships and its gates report it: "
                      + "; ".join(f"{records[i].encoding}: {', '.join(f)}" for i, f in enumerate(failing)))
    timed = sorted((i for i in eligible if records[i].p50_ms is not None),
                   key=lambda i: (records[i].p50_ms, records[i].size_bytes))
    if not timed:
        best = min(eligible, key=lambda i: records[i].size_bytes)
        return best, ("no candidate's latency was measured or estimated on this profile; the smallest "
                      "within the budgets ships")
    best = timed[0]
    why = (f"lowest p50 ({records[best].p50_ms:.3g} ms, {records[best].latency_source}) of the candidates "
           "within the accuracy and size budgets")
    if len(timed) > 1:
        runner_up = records[timed[1]]
        why += (f"; next: {runner_up.encoding} at {runner_up.p50_ms:.3g} ms "
                f"({runner_up.p50_ms / records[best].p50_ms:.2f}x)")
    excluded = [f"{records[i].encoding} ({'; '.join(f)})" for i, f in enumerate(failing) if f]
    if excluded:
        why += f"; over budget: {', '.join(excluded)}"
    untimed = [records[i].encoding for i in eligible if records[i].p50_ms is None]
    if untimed:
        why += f"; latency unknown, so not preferred: {', '.join(untimed)}"
    return best, why


def summary(record: Artifact, breach: Callable[[float], str | None]) -> dict:
    """What the manifest keeps of one candidate."""
    return {"encoding": record.encoding, "precision": record.precision, "size_bytes": record.size_bytes,
            "accuracy": record.accuracy, "accuracy_source": record.accuracy_source,
            "p50_ms": record.p50_ms, "latency_source": record.latency_source,
            "latency_notes": record.latency_notes, "over_budget": failures(record, breach)}
