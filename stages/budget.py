"""The accuracy budget as a stage sees it while it decides how far to go (prune steps, layers
kept in float). The pipeline's gates apply the same rules to the stage's result afterwards."""

from __future__ import annotations

_EPS = 1e-9  # as the gates: 91.50 - 89.50 must be 2.00, not 2.0000000001


def breach(accuracy: float, stage: str, previous: tuple[str, float], teacher: float, budget) -> str | None:
    """Why `accuracy` breaks `budget` (the pipeline's [budget]) for `stage`, or None: its
    own max_drop against `previous` (name, accuracy), and max_drop_total against the teacher."""
    if budget is None:
        return None
    own = getattr(budget.max_drop, stage)
    name, reference = previous
    if own is not None and reference - accuracy > own + _EPS:
        return f"{reference - accuracy:.2f} points below {name} > budget.max_drop.{stage} = {own:g}"
    if teacher - accuracy > budget.max_drop_total + _EPS:
        return f"{teacher - accuracy:.2f} points below the teacher > budget.max_drop_total = {budget.max_drop_total:g}"
    return None


def within_total(accuracy: float, teacher: float, budget) -> bool:
    """Whether `accuracy` is within `budget.max_drop_total` of the teacher (no budget: yes)."""
    return budget is None or teacher - accuracy <= budget.max_drop_total + _EPS
