"""Accuracy gates: a stage or artifact may lose only so many points."""

from __future__ import annotations

from dataclasses import asdict, dataclass

# Gate arithmetic rounds away float noise: 91.50 - 89.50 must be 2.00, not 2.0000000001.
_EPS = 1e-9


@dataclass(frozen=True)
class GateCheck:
    subject: str  # "stage prune" or "target pixel-cpu"
    budget_key: str  # the config key that sets the budget
    value: float  # accuracy, percent
    reference_name: str  # what the drop is measured against
    reference: float
    budget: float  # points

    @property
    def drop(self) -> float:
        return self.reference - self.value

    @property
    def passed(self) -> bool:
        return self.drop <= self.budget + _EPS

    def message(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (f"gate {verdict}: {self.subject}: accuracy {self.value:.2f}% is {self.drop:.2f} points "
                f"below {self.reference_name} ({self.reference:.2f}%), budget {self.budget_key} = "
                f"{self.budget:g}")

    def to_dict(self) -> dict:
        return {**asdict(self), "drop": self.drop, "passed": self.passed}


def checks(subject: str, value: float, previous: tuple[str, float] | None, stage_budget: float | None,
           stage_budget_key: str, teacher: float, max_drop_total: float) -> list[GateCheck]:
    """The gates one stage or artifact must pass: its own per-stage budget against `previous`
    (when both are set) and the total budget against the teacher."""
    out = []
    if previous is not None and stage_budget is not None:
        out.append(GateCheck(subject, stage_budget_key, value, previous[0], previous[1], stage_budget))
    out.append(GateCheck(subject, "budget.max_drop_total", value, "teacher", teacher, max_drop_total))
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
