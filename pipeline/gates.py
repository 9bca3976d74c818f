"""The gates, in one place: a stage or artifact may lose only so many accuracy points (the
rule the stages also decide with: prune steps, layers kept in float, the student to keep),
and an artifact must meet its profile's resource budgets (latency, memory, size)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgekiln.targets.artifact import Artifact

# Gate arithmetic rounds away float noise: 91.50 - 89.50 must be 2.00, not 2.0000000001.
_EPS = 1e-9

# The model every drop is measured against, by its role in [budget] (max_drop_total: points
# below the teacher); the stage that plays it is the registry's reference stage.
REFERENCE = "teacher"


# How an accuracy gate with an interval decides (`[budget] gate`): on the drop itself; only
# when the whole 95% interval of the drop is within budget; or failing only when the drop is
# significantly over budget (the interval's lower end above it).
GATE_RULES = ("point", "strict", "lenient")


@dataclass(frozen=True)
class GateCheck:
    subject: str  # "stage prune" or "target pixel-cpu"
    budget_key: str  # the config key that sets the budget
    value: float  # accuracy, percent
    reference_name: str  # what the drop is measured against
    reference: float
    budget: float  # points
    split: str = "val"  # the images the accuracies were measured on
    drop_interval: tuple[float, float] | None = None  # paired 95% interval of the drop (test gates)
    rule: str = "point"  # GATE_RULES; without an interval a gate decides on the point value

    @property
    def drop(self) -> float:
        return self.reference - self.value

    @property
    def decided_on(self) -> float:
        """The drop figure the gate compares with its budget, under its rule."""
        if self.drop_interval is None or self.rule == "point":
            return self.drop
        return self.drop_interval[1] if self.rule == "strict" else self.drop_interval[0]

    @property
    def passed(self) -> bool:
        return self.decided_on <= self.budget + _EPS

    def message(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        interval = "" if self.drop_interval is None else (
            f" (95% interval {self.drop_interval[0]:+.2f} to {self.drop_interval[1]:+.2f}"
            + ("" if self.rule == "point" else f", gate = {self.rule}") + ")")
        return (f"gate {verdict}: {self.subject}: {self.split} accuracy {self.value:.2f}% is {self.drop:.2f} "
                f"points below {self.reference_name} ({self.reference:.2f}%){interval}, budget "
                f"{self.budget_key} = {self.budget:g}")

    def to_dict(self) -> dict:
        """The manifest's gate record (GATE_RECORD_FIELDS first): `value` is the drop in
        points, `limit` the budget; `accuracy` and `reference` the two accuracies."""
        subject_type, subject = _split_subject(self.subject)
        return {"kind": "accuracy", "subject_type": subject_type, "subject": subject, "metric": "accuracy_drop",
                "unit": "points", "value": self.drop, "limit": self.budget, "status": _status(self.passed),
                "passed": self.passed, "decided_on": self.decided_on, "budget_key": self.budget_key,
                "split": self.split, "accuracy": self.value, "reference_name": self.reference_name,
                "reference": self.reference, "rule": self.rule,
                "drop_interval": None if self.drop_interval is None else list(self.drop_interval)}


def checks(subject: str, value: float, previous: tuple[str, float] | None, stage_budget: float | None,
           stage_budget_key: str, teacher: float, max_drop_total: float, split: str = "val",
           intervals: dict[str, tuple[float, float]] | None = None, rule: str = "point",
           reference_name: str = REFERENCE) -> list[GateCheck]:
    """The gates one stage or artifact must pass: its own per-stage budget against `previous`
    (when both are set) and the total budget against the reference (`teacher`, named
    `reference_name`: the teacher or the given model). `intervals` maps a reference name (the
    reference's, the previous stage's) to the drop's interval against it."""
    intervals = intervals or {}
    out = []
    if previous is not None and stage_budget is not None:
        out.append(GateCheck(subject, stage_budget_key, value, previous[0], previous[1], stage_budget, split,
                             intervals.get(previous[0]), rule))
    out.append(GateCheck(subject, "budget.max_drop_total", value, reference_name, teacher, max_drop_total, split,
                         intervals.get(reference_name), rule))
    return out


def breach(accuracy: float, stage: str, previous: tuple[str, float], teacher: float, budget) -> str | None:
    """Why `accuracy` breaks `budget` (the pipeline's [budget]) for `stage`, or None: its
    own max_drop against `previous` (name, accuracy), and max_drop_total against the teacher."""
    if budget is None:
        return None
    for gate in checks(f"stage {stage}", accuracy, previous, getattr(budget.max_drop, stage),
                       f"budget.max_drop.{stage}", teacher, budget.max_drop_total):
        if not gate.passed:
            against = f"the {REFERENCE}" if gate.reference_name == REFERENCE else gate.reference_name
            return f"{gate.drop:.2f} points below {against} > {gate.budget_key} = {gate.budget:g}"
    return None


def within_total(accuracy: float, teacher: float, budget) -> bool:
    """Whether `accuracy` is within `budget.max_drop_total` of the teacher (no budget: yes)."""
    return budget is None or GateCheck("", "budget.max_drop_total", accuracy, REFERENCE, teacher,
                                       budget.max_drop_total).passed


def lowest_within_total(teacher: float, budget) -> float | None:
    """The lowest val accuracy `within_total` accepts (None: no budget, any will do)."""
    if budget is None or getattr(budget, "max_drop_total", None) is None:
        return None
    return teacher - budget.max_drop_total


def holds_with_margin(margin: float, stage: str, previous: tuple[str, float], teacher: float, budget):
    """A test of a val accuracy for a student loop that may stop once it holds: within
    `budget` for `stage` with `margin` points to spare (None without a budget: nothing to
    stop at)."""
    if budget is None:
        return None
    return lambda accuracy: breach(accuracy - margin, stage, previous, teacher, budget) is None


def verdict(passed: bool | None, unchecked: int = 0) -> str:
    """A run's verdict in words, the same in the console, report.html, the model card and the
    manifest: a pass with budgets that could not be checked says so, so nobody reads it as
    every budget met."""
    if passed is None:
        return "NO VERDICT"
    if not passed:
        return "FAILED"
    return f"PASSED with {unchecked} budget{'' if unchecked == 1 else 's'} not checked" if unchecked else "PASSED"


@dataclass(frozen=True)
class BudgetCheck:
    """A resource budget of an artifact on its profile: latency, peak memory or size. An
    estimated latency is decided first by a measured reference row that bounds it (rule
    "bound", estimate.bounding_rows), else on its interval's upper end (rule "upper") unless the
    target sets `estimate_gate = "point"`: an estimate without an interval cannot pass that way."""

    subject: str  # "target android-cpu"
    budget_key: str  # "budget.p50_ms of profile pixel-3-cpu"
    metric: str  # "p50 latency"
    value: float
    budget: float
    unit: str
    source: str  # host | device | estimate | file
    interval: tuple[float | None, float | None] | None = None  # an estimate's interval, or its bounds
    # point | upper | rounds (a busy host's measurement: passes on its slowest round) | bound (a
    # measured row doing at least, or at most, as much work: interval is (low, high), either None)
    rule: str = "point"
    field: str = "p50_ms"  # the budget's field: p50_ms | p90_ms | peak_memory_mb | size_mb

    @property
    def decided_on(self) -> float:
        if self.rule == "rounds":  # a busy host: decided on its slowest round (made only when that is within)
            return self.interval[1]
        if self.rule == "bound":  # a measured row's bound: the upper one when within, else the lower one over
            low, high = self.interval
            return high if high is not None and high <= self.budget + _EPS else low
        if self.rule != "upper":
            return self.value
        return self.interval[1] if self.interval is not None else math.inf

    @property
    def passed(self) -> bool:
        return self.decided_on <= self.budget + _EPS

    def message(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        how = self.source
        if self.rule == "rounds":
            how = f"host, busy: every round {self.interval[0]:.3g}-{self.interval[1]:.3g} {self.unit} within"
        if self.rule == "bound":
            low, high = self.interval
            how = (f"estimate; a measured row doing at least as much of every counted cost took {high:.3g} {self.unit}"
                   if self.passed else
                   f"estimate; a measured row doing at most as much of every counted cost took {low:.3g} {self.unit}")
        if self.rule == "upper":
            how = (f"estimate, interval {self.interval[0]:.3g}-{self.interval[1]:.3g}: decided on its upper end"
                   if self.interval is not None else
                   'estimate without an interval: it cannot pass unless the target sets estimate_gate = "point"')
        return (f"gate {verdict}: {self.subject}: {self.metric} {self.value:.3g} {self.unit} ({how}) "
                f"{'within' if self.passed else 'over'} {self.budget_key} = {self.budget:g}")

    def to_dict(self) -> dict:
        """The manifest's gate record (GATE_RECORD_FIELDS first); `label` names the metric in words."""
        subject_type, subject = _split_subject(self.subject)
        return {"kind": _KINDS[self.field], "subject_type": subject_type, "subject": subject, "metric": self.field,
                "unit": self.unit, "value": self.value, "limit": self.budget, "status": _status(self.passed),
                "passed": self.passed,
                "decided_on": None if math.isinf(self.decided_on) else self.decided_on,  # JSON has no infinity
                "budget_key": self.budget_key, "label": self.metric, "source": self.source, "rule": self.rule,
                "interval": None if self.interval is None else list(self.interval)}


@dataclass(frozen=True)
class NotChecked:
    """A resource budget of an artifact that could not be checked: its figure was not
    measured, or only estimated to an order of magnitude (`value`, when there is one)."""

    subject: str  # "target android-cpu"
    budget_key: str
    field: str  # p50_ms | p90_ms | peak_memory_mb | size_mb
    metric: str  # "p50 latency"
    unit: str
    budget: float
    why: str
    value: float | None = None

    passed = None  # neither passed nor failed

    def message(self) -> str:
        return f"{self.budget_key} = {self.budget:g} not checked: {self.why}"

    def to_dict(self) -> dict:
        subject_type, subject = _split_subject(self.subject)
        return {"kind": _KINDS[self.field], "subject_type": subject_type, "subject": subject, "metric": self.field,
                "unit": self.unit, "value": self.value, "limit": self.budget, "status": "not_checked",
                "passed": None, "budget_key": self.budget_key, "label": self.metric, "why": self.why}


# The fields every gate record in the manifest has, whatever it checks (manifest.schema.json).
GATE_RECORD_FIELDS = ("kind", "subject_type", "subject", "metric", "unit", "value", "limit", "status")
GATE_STATUSES = ("passed", "failed", "not_checked")
_KINDS = {"p50_ms": "latency", "p90_ms": "latency", "peak_memory_mb": "memory", "size_mb": "size"}


def _status(passed: bool) -> str:
    return "passed" if passed else "failed"


def _split_subject(subject: str) -> tuple[str, str]:
    """("target", "android-cpu") of "target android-cpu"; ("run", subject) otherwise."""
    kind, _, name = subject.partition(" ")
    return (kind, name) if kind in ("stage", "target") and name else ("run", subject)


# (budget field, metric name, unit, how to read the value off an artifact, whether it is measured)
_BUDGETS = (
    ("p50_ms", "p50 latency", "ms", lambda a: (a.latency_ms or {}).get("p50"), True),
    ("p90_ms", "p90 latency", "ms", lambda a: (a.latency_ms or {}).get("p90"), True),
    ("peak_memory_mb", "peak memory", "MB", lambda a: a.peak_memory_mb, True),
    ("size_mb", "size", "MB", lambda a: a.size_bytes / 1e6, False),
)


def budget_checks(subject: str, artifact: Artifact) -> tuple[list[BudgetCheck], list[NotChecked]]:
    """Checks of an artifact against its profile's budgets, and every budget set that could
    not be checked: its figure was not measured (nor estimated), or only estimated to an
    order of magnitude (a profile table too small or too wrong to decide on) that no measured
    row's bound decides."""
    checks_, unchecked = [], []
    for field, metric, unit, read, measured in _BUDGETS:
        if artifact.budget.get(field) is None:
            continue
        limit = float(artifact.budget[field])
        key = artifact.budget_keys.get(field, f"budget.{field} of profile {artifact.profile}")
        value = read(artifact)
        if value is None:
            unchecked.append(NotChecked(subject, key, field, metric, unit, limit, f"{metric} was not measured "
                                        f"(source: {artifact.latency_source or 'none'})"))
            continue
        source = artifact.latency_source if measured else "file"
        if source == "estimate" and unit == "MB":  # an estimated device's memory is measured in this host's runtime
            source = (artifact.latency_detail or {}).get("peak_memory_source") or source
        bound = _decided_by_bound(artifact, field, limit) if source == "estimate" and unit == "ms" else None
        if bound is not None:
            checks_.append(BudgetCheck(subject, key, metric, float(value), limit, unit, source, bound, "bound", field))
            continue
        weak = (artifact.latency_detail or {}).get("order_of_magnitude") if source == "estimate" else None
        if weak:
            low, high = _bounds(artifact, field) if unit == "ms" else (None, None)
            bounded = "".join([f"; no faster than a measured row's {low:.3g} {unit}" if low is not None else "",
                               f"; no slower than a measured row's {high:.3g} {unit}" if high is not None else ""])
            unchecked.append(NotChecked(
                subject, key, field, metric, unit, limit, f"{metric} {float(value):.3g} {unit} is an order-of-magnitude "
                f"estimate ({weak}){bounded}; measure on the device or calibrate the profile (edgekiln profile "
                "calibrate)", float(value)))
            continue
        interval, rule = None, "point"
        if source == "estimate" and unit == "ms" and artifact.estimate_gate != "point":
            interval, rule = (artifact.latency_ms or {}).get(field.removesuffix("_ms") + "_interval"), "upper"
        busy = (artifact.latency_detail or {}).get("host_busy") if source == "host" and unit == "ms" else None
        if busy:
            # Load only slows a timing: a busy host's slowest round within the budget is a pass
            # to trust; anything slower says more about the neighbours than the artifact.
            interval, rule = (artifact.latency_ms or {}).get(field.removesuffix("_ms") + "_interval"), "rounds"
            if interval is None or interval[1] > limit + _EPS:
                spread = "" if interval is None else f"; its rounds ranged {interval[0]:.3g}-{interval[1]:.3g} {unit}"
                unchecked.append(NotChecked(subject, key, field, metric, unit, limit,
                                            f"not checked: host busy ({busy}){spread}: a busy host never fails a "
                                            "latency budget; re-run on a quiet host (or `edgekiln check` there)",
                                            float(value)))
                continue
        checks_.append(BudgetCheck(subject, key, metric, float(value), limit, unit, source,
                                   None if interval is None else tuple(interval), rule, field))
    return checks_, unchecked


def _bounds(artifact: Artifact, field: str) -> tuple[float | None, float | None]:
    """(low, high) of an estimated latency `field` from the measured rows that bound it (either None)."""
    return ((artifact.latency_detail or {}).get("bounds") or {}).get(field.removesuffix("_ms")) or (None, None)


def _decided_by_bound(artifact: Artifact, field: str, limit: float) -> tuple[float | None, float | None] | None:
    """An estimated latency's bounds from measured rows of its profile (estimate.bounding_rows) when
    they decide `limit`: a row doing at least as much work within it, or one doing at most as
    much over it. Such a row decides whatever the fit's quality (rows of a precision the fit
    is not trusted on still measured what they measured); None when neither decides."""
    low, high = _bounds(artifact, field)
    if (high is not None and high <= limit + _EPS) or (low is not None and low > limit + _EPS):
        return low, high
    return None


def gate_from_dict(record: dict) -> GateCheck | BudgetCheck | NotChecked:
    """A gate back from its manifest record: an accuracy gate, a resource budget, or a budget
    not checked; records of manifests from before schema_version 2 are read too."""
    if "kind" not in record:
        return _gate_from_v1(record)
    subject = record["subject"] if record["subject_type"] == "run" else f"{record['subject_type']} {record['subject']}"
    if record["status"] == "not_checked":
        return NotChecked(subject, record["budget_key"], record["metric"], record["label"], record["unit"],
                          record["limit"], record["why"], record.get("value"))
    if record["kind"] == "accuracy":
        interval = record.get("drop_interval")
        return GateCheck(subject=subject, budget_key=record["budget_key"], value=record["accuracy"],
                         reference_name=record["reference_name"], reference=record["reference"],
                         budget=record["limit"], split=record.get("split", "val"),
                         drop_interval=None if interval is None else tuple(interval), rule=record.get("rule", "point"))
    interval = record.get("interval")
    return BudgetCheck(subject, record["budget_key"], record["label"], record["value"], record["limit"], record["unit"],
                       record["source"], None if interval is None else tuple(interval), record.get("rule", "point"),
                       record["metric"])


def _gate_from_v1(record: dict) -> GateCheck | BudgetCheck:
    if "metric" in record:
        interval = record.get("interval")
        field = next((f for f, label, *_ in _BUDGETS if label == record["metric"]), "p50_ms")
        return BudgetCheck(**{k: record[k] for k in ("subject", "budget_key", "metric", "value", "budget", "unit",
                                                     "source")},
                           interval=None if interval is None else tuple(interval), rule=record.get("rule", "point"),
                           field=field)
    interval = record.get("drop_interval")
    return GateCheck(subject=record["subject"], budget_key=record["budget_key"], value=record["value"],
                     reference_name=record["reference_name"], reference=record["reference"], budget=record["budget"],
                     split=record.get("split", "val"), drop_interval=None if interval is None else tuple(interval),
                     rule=record.get("rule", "point"))


def _as_dict(record) -> dict:
    """A gate record as JSON: the manifest's dict or its typed record (engine/manifest_schema.py)."""
    return record if isinstance(record, dict) else record.model_dump(exclude_unset=True)


def record_subject(record) -> str:
    """What a gate record judged, in words ("target android-cpu"), of either record layout."""
    record = _as_dict(record)
    if "subject_type" in record and record.get("subject_type") != "run":
        return f"{record['subject_type']} {record.get('subject')}"
    return record.get("subject") or "run"


def gate_message(record) -> str:
    """A gate record's message; for a record cut short (a hand-edited or older manifest), what
    is left of it, so that a report still renders."""
    record = _as_dict(record)
    try:
        return gate_from_dict(record).message()
    except (KeyError, TypeError, ValueError):
        verdict = {True: "passed", False: "FAILED"}.get(record.get("passed"), "verdict not recorded")
        if record.get("status") == "not_checked":
            verdict = "not checked"
        return (f"gate {verdict}: {record_subject(record)}: {record.get('budget_key') or '?'} "
                "(the manifest's gate record is incomplete)")
