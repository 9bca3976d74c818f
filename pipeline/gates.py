"""Gates: a stage or artifact may lose only so many accuracy points (the rule is
stages/budget.py's, the one the stages decide with), and an artifact must meet its profile's
resource budgets (latency, memory, size)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from edgekiln.stages.budget import GATE_RULES, GateCheck, checks
from edgekiln.targets.artifact import Artifact

__all__ = ["GATE_RULES", "GateCheck", "checks", "BudgetCheck", "budget_checks", "gate_from_dict", "gate_message"]

_EPS = 1e-9  # as the accuracy rule (stages/budget.py)

@dataclass(frozen=True)
class BudgetCheck:
    """A resource budget of an artifact on its profile: latency, peak memory or size. An
    estimated latency decides on its interval's upper end (rule "upper") unless the target
    sets `estimate_gate = "point"`: an estimate without an interval cannot pass that way."""

    subject: str  # "target android-cpu"
    budget_key: str  # "budget.p50_ms of profile pixel-3-cpu"
    metric: str  # "p50 latency"
    value: float
    budget: float
    unit: str
    source: str  # host | device | estimate | file
    interval: tuple[float, float] | None = None  # an estimate's interval
    rule: str = "point"  # point | upper

    @property
    def decided_on(self) -> float:
        if self.rule != "upper":
            return self.value
        return self.interval[1] if self.interval is not None else math.inf

    @property
    def passed(self) -> bool:
        return self.decided_on <= self.budget + _EPS

    def message(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        how = self.source
        if self.rule == "upper":
            how = (f"estimate, interval {self.interval[0]:.3g}-{self.interval[1]:.3g}: decided on its upper end"
                   if self.interval is not None else
                   'estimate without an interval: it cannot pass unless the target sets estimate_gate = "point"')
        return (f"gate {verdict}: {self.subject}: {self.metric} {self.value:.3g} {self.unit} ({how}) "
                f"{'within' if self.passed else 'over'} {self.budget_key} = {self.budget:g}")

    def to_dict(self) -> dict:
        record = {**asdict(self), "passed": self.passed, "decided_on": self.decided_on}
        record["interval"] = None if self.interval is None else list(self.interval)
        if math.isinf(record["decided_on"]):
            record["decided_on"] = None  # JSON has no infinity
        return record


# (budget field, metric name, unit, how to read the value off an artifact, whether it is measured)
_BUDGETS = (
    ("p50_ms", "p50 latency", "ms", lambda a: (a.latency_ms or {}).get("p50"), True),
    ("p90_ms", "p90 latency", "ms", lambda a: (a.latency_ms or {}).get("p90"), True),
    ("peak_memory_mb", "peak memory", "MB", lambda a: a.peak_memory_mb, True),
    ("size_mb", "size", "MB", lambda a: a.size_bytes / 1e6, False),
)


def budget_checks(subject: str, artifact: Artifact) -> tuple[list[BudgetCheck], list[str]]:
    """Checks of an artifact against its profile's budgets, and a note for every budget set
    that could not be checked: its figure was not measured (nor estimated), or only estimated
    to an order of magnitude (a profile table too small or too wrong to decide on)."""
    checks_, unchecked = [], []
    for field, metric, unit, read, measured in _BUDGETS:
        if artifact.budget.get(field) is None:
            continue
        limit = float(artifact.budget[field])
        key = artifact.budget_keys.get(field, f"budget.{field} of profile {artifact.profile}")
        value = read(artifact)
        if value is None:
            unchecked.append(f"{key} = {limit:g} not checked: "
                             f"{metric} was not measured (source: {artifact.latency_source or 'none'})")
            continue
        source = artifact.latency_source if measured else "file"
        weak = (artifact.latency_detail or {}).get("order_of_magnitude") if source == "estimate" else None
        if weak:
            unchecked.append(f"{key} = {limit:g} not checked: {metric} {float(value):.3g} {unit} is an order-of-"
                             f"magnitude estimate ({weak}); measure on the device or calibrate the profile "
                             "(edgekiln profile calibrate)")
            continue
        interval, rule = None, "point"
        if source == "estimate" and unit == "ms" and artifact.estimate_gate != "point":
            interval, rule = (artifact.latency_ms or {}).get(field.removesuffix("_ms") + "_interval"), "upper"
        checks_.append(BudgetCheck(subject, key, metric, float(value), limit, unit, source,
                                   None if interval is None else tuple(interval), rule))
    return checks_, unchecked


def gate_from_dict(record: dict) -> GateCheck | BudgetCheck:
    """A gate back from its manifest record (an accuracy gate or a resource budget)."""
    if "metric" in record:
        interval = record.get("interval")
        return BudgetCheck(**{k: record[k] for k in ("subject", "budget_key", "metric", "value", "budget", "unit",
                                                     "source")},
                           interval=None if interval is None else tuple(interval), rule=record.get("rule", "point"))
    interval = record.get("drop_interval")
    return GateCheck(subject=record["subject"], budget_key=record["budget_key"], value=record["value"],
                     reference_name=record["reference_name"], reference=record["reference"], budget=record["budget"],
                     split=record.get("split", "val"), drop_interval=None if interval is None else tuple(interval),
                     rule=record.get("rule", "point"))


def gate_message(record: dict) -> str:
    """A gate record's message; for a record cut short (a hand-edited or older manifest), what
    is left of it, so that a report still renders."""
    try:
        return gate_from_dict(record).message()
    except (KeyError, TypeError, ValueError):
        verdict = {True: "passed", False: "FAILED"}.get(record.get("passed"), "verdict not recorded")
        return (f"gate {verdict}: {record.get('subject') or '?'}: {record.get('budget_key') or '?'} "
                "(the manifest's gate record is incomplete)")
