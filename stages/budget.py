"""The accuracy budget: one rule, used by the stages while they decide how far to go (prune
steps, layers kept in float, the student to keep) and by the pipeline's gates afterwards."""

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


def breach(accuracy: float, stage: str, previous: tuple[str, float], teacher: float, budget) -> str | None:
    """Why `accuracy` breaks `budget` (the pipeline's [budget]) for `stage`, or None: its
    own max_drop against `previous` (name, accuracy), and max_drop_total against the teacher."""
    if budget is None:
        return None
    for gate in checks(f"stage {stage}", accuracy, previous, getattr(budget.max_drop, stage),
                       f"budget.max_drop.{stage}", teacher, budget.max_drop_total):
        if not gate.passed:
            against = "the teacher" if gate.reference_name == "teacher" else gate.reference_name
            return f"{gate.drop:.2f} points below {against} > {gate.budget_key} = {gate.budget:g}"
    return None


def within_total(accuracy: float, teacher: float, budget) -> bool:
    """Whether `accuracy` is within `budget.max_drop_total` of the teacher (no budget: yes)."""
    return budget is None or GateCheck("", "budget.max_drop_total", accuracy, "teacher", teacher,
                                       budget.max_drop_total).passed


def holds_with_margin(margin: float, stage: str, previous: tuple[str, float], teacher: float, budget):
    """A test of a val accuracy for a student loop that may stop once it holds: within
    `budget` for `stage` with `margin` points to spare (None without a budget: nothing to
    stop at)."""
    if budget is None:
        return None
    return lambda accuracy: breach(accuracy - margin, stage, previous, teacher, budget) is None
