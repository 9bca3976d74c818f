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
