"""Where the shipped model came from: each stage's line for the model card, report.html and
`diff` (the teacher, the student, how it was pruned and quantized)."""

from __future__ import annotations

from edgekiln import stages as registry


def lineage(run) -> list[tuple[str, str | None, str]]:
    """(what, model name or None, details) from each planned stage that says where the shipped
    model came from, in stage order. `run`: the RunRecord."""
    planned = run.plan.stages  # None: a manifest from before plans, which ran every stage
    return [line for stage in registry.registered() if stage.reporting.lineage
            and (planned is None or stage.name in planned) and (line := stage.reporting.lineage(run)) is not None]
