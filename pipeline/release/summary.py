"""What a person reads on the console after a run: the candidate, stage and artifact tables and the verdict."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from edgekiln import stages as registry
from edgekiln import time_budget
from edgekiln.figures import kilobytes, millions, num, text, verdict
from edgekiln.gates import verdict as verdict_of
from edgekiln.progress import console


def _interval(pair, fmt: str = ".1f") -> str:
    return "-" if not pair else f"[{format(pair[0], fmt)}, {format(pair[1], fmt)}]"


def _with_interval(value, pair) -> str:
    return "-" if value is None else f"{value:.2f} {_interval(pair)}".strip(" -")


def _other_start(name: str) -> bool:
    """A starting stage (teacher, given): skipped on every run that starts from the other."""
    try:
        return registry.stage_named(name).starts
    except KeyError:  # a stage of a run whose package is not installed here
        return False


def print_summary(run, manifest_path: Path) -> None:
    """The stage table, each stage's own tables (candidates, steps), then one row per
    artifact, then the verdict; an absent figure is "-". `run`: the RunRecord."""
    splits = run.splits
    stages = Table(title=f"stages (decided on val; test held out: {(splits and splits.test) or 0} images)",
                   title_justify="left")
    for col in ("stage", "val %", "drop", "budget", "test % (95% CI)", "params", "MACs", "cached",
                "seconds", "gate"):
        stages.add_column(col, justify="left" if col in ("stage", "gate") else "right")
    plan = run.plan
    for s in run.stages:
        name = plan.reference_title if s.name == plan.reference else s.name
        stages.add_row(text(name + (f" ({s.branch})" if s.branch else "")), num(s.accuracy),
                       num(s.drop, "+.2f"), num(s.budget, "g"),
                       _with_interval(s.test_accuracy, s.test_accuracy_ci),
                       millions(s.params), millions(s.macs), "yes" if s.cached else "no",
                       num(s.seconds, ".1f"), _marked(s.passed))
    console.print(stages)
    for s in plan.skipped:
        # the other way in (a run starts from [teacher] or [model]) is no news on every run:
        # the manifest and report.html keep it
        if s.stage and not _other_start(s.stage):
            console.print(f"  skipped: {s.stage} ({s.why})", markup=False)
    if run.time_budget:
        console.print(time_budget.describe(run.time_budget), markup=False)
    for b in run.branches:  # a student per group of targets
        why = "; ".join(f"{', '.join(w.targets)}: {w.why}" for w in b.why)
        console.print(f"  student {b.student} for {', '.join(b.targets)} ({why})", markup=False)
    chance = 100.0 / max(len(run.labels), 1)
    for s in run.stages:
        if s.accuracy is not None and s.accuracy <= chance + 0.5 * (100 - chance) / 10:  # within a twentieth of chance
            shown = plan.reference_title if s.name == plan.reference else f"stage {s.name}"
            console.print(f"[bold yellow]warning:[/] {shown} is at chance ({s.accuracy:.2f}% with "
                          f"{len(run.labels)} classes): it learned nothing; check the data and the "
                          "learning rates before trusting any later figure")
    for stage in registry.registered():  # each stage's own tables and notes
        if stage.reporting.summary is not None:
            stage.reporting.summary(run, console)
    if run.artifacts:
        _artifact_table(run)
    for name, why in run.report_errors.items():
        console.print(f"[bold red]{name} could not be written:[/] {why}")
    unchecked = run.unchecked
    words = run.verdict or verdict_of(run.passed, len(unchecked))
    colour = "red" if not run.passed else "yellow" if unchecked else "green"
    console.print(f"[bold {colour}]{words}[/] — manifest: {manifest_path}")
    for line in unchecked:  # the budgets a reader of PASSED must not take as met
        console.print(f"  not checked: {line.split(' not checked')[0]}", markup=False)
    if unchecked and (run.config.release or {}).get("require_checked"):
        console.print(f"[bold red]release.require_checked = true:[/] the {len(unchecked)} budget(s) not checked fail "
                      "the run")


def _artifact_table(run) -> None:
    """One row per artifact, then what the figures rest on and the notes of each."""
    plan, splits = run.plan, run.splits
    artifacts = Table(title="artifacts", title_justify="left")
    drop_vs = f"drop vs {plan.reference_title}"
    numeric = ("size", "val %", "test % (95% CI)", drop_vs, "p50 ms", "p90 ms", "peak MB")
    for col in ("target", "format", "encoding", "size", "val %", "test % (95% CI)", drop_vs,
                "measured in", "profile", "p50 ms", "p90 ms", "peak MB", "latency from", "gate"):
        artifacts.add_column(col, justify="right" if col in numeric else "left")
    for a in run.artifacts:
        lat = a.latency_ms
        drop = "-" if a.test_drop is None else f"{a.test_drop:+.2f} {_interval(a.drop_ci, '+.2f')}"
        p50 = num(a.p50_ms, ".3f") + (f" {_interval(lat.p50_interval, '.3g')}" if lat and lat.p50_interval else "")
        artifacts.add_row(
            text(a.target), text(a.format), text(a.encoding), kilobytes(a.size_bytes), num(a.accuracy),
            _with_interval(a.test_accuracy, a.test_accuracy_ci), drop,
            text(a.accuracy_source), a.profile or "-", p50, num(lat and lat.p90, ".3f"),
            num(a.peak_memory_mb, ".1f"), a.latency_source or "not measured",
            _marked(a.passed))
    console.print(artifacts)
    if splits and splits.test:
        console.print(f"note: release gates are judged on the {splits.test} held-out test images "
                      f"(one image = {100 / splits.test:.2f} points); intervals are 95%: Clopper-Pearson "
                      f"for accuracy, exact paired (McNemar) for the drop. Members: {splits.file}.")
    elif splits:
        console.print(f"note: {splits.note}")
    if splits and splits.skipped:
        console.print(f"note: {splits.skipped.get('count')} hidden file(s) or folder(s) in the data were not "
                      "read (the name starts with '.'); manifest: splits.skipped", markup=False)
    for a in run.artifacts:
        if a.accuracy_source == "proxy":
            console.print(f"note: {a.target} ({a.format}) accuracy is a torch-side proxy, not measured "
                          f"in its runtime ({a.accuracy_not_measured}).")
        choice = a.encoding_choice
        if choice:
            tried = ", ".join(f"{c.encoding} {num(c.median_ms or c.p50_ms, '.3g')} ms {num(c.accuracy)}%"
                              for c in choice.candidates)
            console.print(f"note: {a.target}: {choice.chosen} ships ({choice.why}); tried {tried}")
        mixed = a.mixed_precision
        if mixed and mixed.applied:
            console.print(f"note: {a.target}: INT8 gave {num(a.int8_accuracy)}% ({mixed.breach}); "
                          f"{mixed.outcome}: {', '.join(mixed.float_layers)}")
        elif mixed:
            console.print(f"note: {a.target}: INT8 gave {num(a.int8_accuracy)}% ({mixed.breach}); {mixed.why_not}")
        if a.quantization.get("activations"):
            console.print(f"note: {a.target}: activations {a.quantization['activations']}")
        for line in a.latency_notes + a.budgets_not_checked:
            console.print(f"note: {a.target}: {line}")
        if a.latency_source == "host" and (a.profile or "").startswith("host-"):
            console.print(f"note: {a.target}: latency is this machine's (no profile named), not a device's.")


def _marked(passed) -> str:
    """A gate's outcome for the console: FAIL in red."""
    return "[red]FAIL" if passed is False else verdict(passed)
