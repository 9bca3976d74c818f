"""Accuracy gates: a stage or artifact may lose only so many points."""

from __future__ import annotations

from dataclasses import asdict, dataclass

# Gate arithmetic rounds away float noise: 91.50 - 89.50 must be 2.00, not 2.0000000001.
_EPS = 1e-9


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
        record = {**asdict(self), "drop": self.drop, "passed": self.passed, "decided_on": self.decided_on}
        record["drop_interval"] = None if self.drop_interval is None else list(self.drop_interval)
        return record


def checks(subject: str, value: float, previous: tuple[str, float] | None, stage_budget: float | None,
           stage_budget_key: str, teacher: float, max_drop_total: float, split: str = "val",
           intervals: dict[str, tuple[float, float]] | None = None, rule: str = "point") -> list[GateCheck]:
    """The gates one stage or artifact must pass: its own per-stage budget against `previous`
    (when both are set) and the total budget against the teacher. `intervals` maps a
    reference name ("teacher", the previous stage's) to the drop's interval against it."""
    intervals = intervals or {}
    out = []
    if previous is not None and stage_budget is not None:
        out.append(GateCheck(subject, stage_budget_key, value, previous[0], previous[1], stage_budget, split,
                             intervals.get(previous[0]), rule))
    out.append(GateCheck(subject, "budget.max_drop_total", value, "teacher", teacher, max_drop_total, split,
                         intervals.get("teacher"), rule))
    return out


@dataclass(frozen=True)
class BudgetCheck:
    """A resource budget of an artifact on its profile: latency, peak memory or size."""

    subject: str  # "target android-cpu"
    budget_key: str  # "budget.p50_ms of profile pixel-3-cpu"
    metric: str  # "p50 latency"
    value: float
    budget: float
    unit: str
    source: str  # host | device | estimate | file

    @property
    def passed(self) -> bool:
        return self.value <= self.budget + _EPS

    def message(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (f"gate {verdict}: {self.subject}: {self.metric} {self.value:.3g} {self.unit} ({self.source}) "
                f"{'within' if self.passed else 'over'} {self.budget_key} = {self.budget:g}")

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


# (budget field, metric name, unit, how to read the value off an artifact record)
_BUDGETS = (
    ("p50_ms", "p50 latency", "ms", lambda a: (a.get("latency_ms") or {}).get("p50"), "latency_source"),
    ("p90_ms", "p90 latency", "ms", lambda a: (a.get("latency_ms") or {}).get("p90"), "latency_source"),
    ("peak_memory_mb", "peak memory", "MB", lambda a: a.get("peak_memory_mb"), "latency_source"),
    ("size_mb", "size", "MB", lambda a: a["size_bytes"] / 1e6 if "size_bytes" in a else None, None),
)


def budget_checks(subject: str, artifact: dict) -> tuple[list[BudgetCheck], list[str]]:
    """Checks of an artifact record against its profile's budgets, and a note for every budget
    set that could not be checked because its figure was not measured (nor estimated)."""
    budgets = artifact.get("budget") or {}
    checks_, unchecked = [], []
    for field, metric, unit, read, source_key in _BUDGETS:
        if budgets.get(field) is None:
            continue
        key = (artifact.get("budget_keys") or {}).get(field, f"budget.{field} of profile {artifact.get('profile')}")
        value = read(artifact)
        if value is None:
            unchecked.append(f"{key} = {budgets[field]:g} not checked: "
                             f"{metric} was not measured (source: {artifact.get(source_key) or 'none'})")
            continue
        source = artifact.get(source_key) if source_key else "file"
        checks_.append(BudgetCheck(subject, key, metric, float(value), float(budgets[field]), unit, source))
    return checks_, unchecked
