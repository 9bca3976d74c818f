"""A run's time budget (`[pipeline] max_minutes`, `edgekiln run --max-minutes`).

Before training, the run is planned on this machine (engine/planning.py: each stage's loops
and conversions, each architecture timed by a short probe). As each stage starts, it gets a
deadline: its share of what the budget has left, in proportion to what the plan expects of
it and of the stages after it; so a stage that finishes early (a cached one, a loop that
stops on patience) leaves its time to the ones after it, and one that overran takes from
them. An auto training loop stops at its stage's deadline after at least one epoch,
keeping its best epoch (training/schedule.py); a student search gives each candidate's round
its portion of what is left (stages/distill); pruning takes no new step once the deadline has
passed. What the budget cut is recorded with the stage's result and in the manifest.

A process-wide state: one run at a time per process (as the runner is). Torch-free."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field


def deadline_minutes(max_minutes: float, expected: dict[str, float]) -> dict[str, float]:
    """The minute of the run each stage must end by: the budget's share of every stage up to
    and including it, in proportion to the minutes the plan expects of each."""
    total = sum(expected.values()) or 1.0
    out, reached = {}, 0.0
    for name, minutes in expected.items():
        reached += minutes
        out[name] = max_minutes * reached / total
    return out


@dataclass
class Budget:
    """The run's budget and its plan: `expected` minutes per stage (the plan's rows)."""

    max_minutes: float
    expected: dict[str, float]
    started: float = field(default_factory=time.monotonic)
    deadlines: dict[str, float] = field(default_factory=dict)  # stage -> monotonic seconds, set as it starts
    cuts: dict[str, list[str]] = field(default_factory=dict)  # stage -> what the budget cut there
    stage: str | None = None
    stage_started: float = 0.0
    deadline: float | None = None  # the current stage's, or a candidate's portion of it

    @property
    def end(self) -> float:
        return self.started + 60 * self.max_minutes

    def enter(self, name: str) -> float:
        """The deadline of stage `name`, set as it starts: its share of what the budget has
        left, against what the plan expects of it and of the stages after it. What the run
        spent before it (loading, planning, the checks, earlier stages) is gone; a stage that
        took less than its share (or was cached) leaves the rest to the ones after it."""
        now = time.monotonic()
        names = list(self.expected)
        rest = names[names.index(name):] if name in names else [name]
        share = self.expected.get(name, 0.0) / (sum(self.expected.get(n, 0.0) for n in rest) or 1.0)
        self.deadlines[name] = now + max(0.0, self.end - now) * share
        return self.deadlines[name]

    @property
    def elapsed_minutes(self) -> float:
        return (time.monotonic() - self.started) / 60

    def eta_minutes(self) -> float:
        """The run's minutes to go: what the plan expects of the stage under way (less what it
        has spent) and of the stages after it, within what the budget has left."""
        names = list(self.expected)
        after = names[names.index(self.stage) + 1:] if self.stage in names else names
        current = self.expected.get(self.stage, 0.0) - (time.monotonic() - self.stage_started) / 60 \
            if self.stage in names else 0.0
        left = max(0.0, current) + sum(self.expected[n] for n in after)
        return max(0.0, min(left, self.max_minutes - self.elapsed_minutes))


_budget: Budget | None = None


def start(max_minutes: float, expected: dict[str, float], started: float | None = None) -> Budget:
    """Start the run's budget; `started`: when the run began (time.monotonic(); default now):
    what planning took is spent from it."""
    global _budget
    _budget = Budget(max_minutes, dict(expected), **({} if started is None else {"started": started}))
    return _budget


def stop() -> None:
    global _budget
    _budget = None


def current() -> Budget | None:
    return _budget


@contextlib.contextmanager
def stage(name: str):
    """The stage `name` is under way: loops in it stop at its deadline. Yields the list the
    budget's cuts in it are appended to."""
    budget = _budget
    if budget is None:
        yield []
        return
    budget.stage, budget.stage_started = name, time.monotonic()
    budget.deadline = budget.enter(name)
    cuts = budget.cuts.setdefault(name, [])
    try:
        yield cuts
    finally:
        budget.stage, budget.deadline = None, None


@contextlib.contextmanager
def portion(shares: float):
    """One of `shares` equal parts of what the current deadline leaves (a candidate's round in
    a student search, with a part kept for the winner's training after it)."""
    budget = _budget
    if budget is None or budget.deadline is None or shares <= 1:
        yield
        return
    outer = budget.deadline
    budget.deadline = time.monotonic() + max(0.0, outer - time.monotonic()) / shares
    try:
        yield
    finally:
        budget.deadline = outer


def expired() -> str | None:
    """Why the loop under way must stop now (its deadline passed), or None."""
    budget = _budget
    if budget is None or budget.deadline is None or time.monotonic() < budget.deadline:
        return None
    return (f"time budget: pipeline.max_minutes = {budget.max_minutes:g} left this stage until minute "
            f"{(budget.deadline - budget.started) / 60:.1f} of the run (now {budget.elapsed_minutes:.1f})")


def is_cut(reason: str | None) -> bool:
    """Whether a loop's stop reason is the time budget's."""
    return bool(reason) and reason.startswith("time budget:")


def cut(what: str) -> None:
    """Record that the budget cut `what` in the stage under way."""
    budget = _budget
    if budget is not None and budget.stage is not None:
        budget.cuts[budget.stage].append(what)


def progress_note() -> str:
    """", run ETA 6 min of 10" for the progress lines while a budget is set; else ""."""
    budget = _budget
    if budget is None:
        return ""
    return f", run ETA {budget.eta_minutes():.1f} min ({budget.elapsed_minutes:.1f} of {budget.max_minutes:g} spent)"


def describe(budget) -> str:
    """One line on the run's `time_budget` record (its RunRecord's): the minutes spent against
    it, and what it cut (the console summary and report.html)."""
    cut = budget.cut or {}
    spent = budget.minutes
    said = (f"time budget: {spent:.1f} of {budget.max_minutes:g} min" if spent is not None
            else f"time budget: {budget.max_minutes:g} min")
    if not cut:
        return said + "; nothing was cut"
    return said + "; cut by it (each kept its best epoch so far): " + "; ".join(
        f"{stage}: {', '.join(what)}" for stage, what in cut.items())
