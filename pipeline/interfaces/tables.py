"""What the command line prints besides the run summary (release/summary.py): the tables of
`check`, `bench`, `diff`, `profile` and `cache`, and their findings."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape

from edgekiln.progress import console


def checks_table(title: str, checks, recorded: dict | None = None):
    """`check`/`bench`: one row per artifact checked; `recorded`: target -> its ArtifactRecord
    in the run's manifest (`check`), whose accuracies are shown beside the re-measured ones."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    cols = ["target", "artifact", "sha256", "val %"] + (["manifest %"] if recorded is not None else []) + (
        ["test %", "manifest test %"] if recorded is not None else []) + [
        "profile", "source", "p50 ms", "p90 ms", "peak MB", "result"]
    for col in cols:
        table.add_column(col)
    for c in checks:
        lat, m = c.latency, c.measurement or {}
        row = [c.target, Path(c.path).name, {None: "-", True: "ok", False: "[red]MISMATCH"}[c.sha256_matches],
               "-" if c.accuracy is None else f"{c.accuracy:.2f}"]
        if recorded is not None:
            record = recorded[c.target]
            row += ["-" if record.accuracy is None else f"{record.accuracy:.2f}",
                    "-" if c.test_accuracy is None else f"{c.test_accuracy:.2f}",
                    "-" if record.test_accuracy is None else f"{record.test_accuracy:.2f}"]
        row += [c.profile or "-", m.get("source") or "not measured",
                "-" if lat.get("p50") is None else f"{lat['p50']:.3f}",
                "-" if lat.get("p90") is None else f"{lat['p90']:.3f}",
                "-" if m.get("peak_memory_mb") is None else f"{m['peak_memory_mb']:.1f}",
                "pass" if c.passed else "[red]FAIL"]
        table.add_row(*row)
    return table


def print_findings(checks) -> None:
    for c in checks:
        for line in c.problems:
            console.print(f"[bold red]{c.target}:[/] {line}")
        for gate in c.budgets:
            console.print(("" if gate.passed else "[bold red]") + gate.message())
        for line in c.notes + c.budgets_not_checked:
            console.print(f"{c.target}: {line}")


def diff_table(result):
    from rich.table import Table

    from edgekiln.release.regression import format_figure as _fmt

    table = Table(title=f"diff {result.base} -> {result.new}", title_justify="left")
    for col in ("target", "figure", "base", "new", "change", "gate"):
        table.add_column(col, justify="right" if col in ("base", "new", "change") else "left")
    for t in result.targets:
        if t.status == "incomplete":
            table.add_row(t.target, "-", "-", "-", "-", f"[bold red]not comparable: {t.why}")
            continue
        if t.status != "compared":
            table.add_row(t.target, "-", "-", "-", "-", "new in this run" if t.status == "added" else "removed")
            continue
        for c in t.changes:
            change = "changed" if c.delta is None else (
                f"{_fmt(c.delta, signed=True)}" + ("" if c.pct is None else f" ({c.pct:+.1f}%)"))
            gate = ("[bold red]REGRESSION" if c.regressed else f"not compared: {c.why_not_comparable}"
                    if not c.comparable else f"ok (<= {c.threshold:g})" if c.gated else "")
            table.add_row(t.target, c.metric + (f" {c.unit}" if c.unit else ""), _fmt(c.base), _fmt(c.new),
                          change, gate)
    return table


def error_table(profile):
    from rich.table import Table

    from edgekiln.targets.runners.estimate import MAX_MEDIAN_ERROR_PCT, MIN_ROWS
    from edgekiln.targets.runners.estimate import error_table as rows_of

    table = Table(title=f"{profile.name}: leave-one-out error of its estimates ({profile.references_path().name})",
                  title_justify="left")
    for col in ("precision", "rows", "model", "fixed ms", "LOO median %", "LOO mean %", "LOO worst %", "estimates"):
        table.add_column(col, justify="left" if col in ("precision", "model", "estimates") else "right")
    rows = rows_of(profile)
    for row in rows:
        table.add_row(row["precision"], str(row["rows"]), row["model"],
                      "-" if row["fixed_ms"] is None else f"{row['fixed_ms']:.3g}",
                      *("-" if row[k] is None else f"{row[k]:.0f}" for k in ("loo_median_pct", "loo_mean_pct",
                                                                              "loo_worst_pct")),
                      f"order of magnitude only: {row['order_of_magnitude']}" if row["order_of_magnitude"]
                      else "decide budgets")
    bound = "; ".join(f"{row['precision']} " + (f"no (faster in {row['monotonic_against']} of {row['monotonic_pairs']})"
                                                if row["monotonic_against"] else f"yes ({row['monotonic_pairs']} agree)")
                      for row in rows)
    table.caption = (f"An estimate decides a budget only with {MIN_ROWS}+ rows of its precision and a leave-one-out "
                     f"median error under {MAX_MEDIAN_ERROR_PCT:g}%, or where a row bounds it (a row doing at least as "
                     "much of every cost is no faster), if the table's own row pairs never say otherwise: "
                     f"{bound}.")
    return table


def cache_table(cache_dir: Path, entries):
    """The cache's entries: stage, key, size, when written and last used."""
    import time

    from rich.table import Table

    table = Table(title=f"{cache_dir}: {len(entries)} entries, {sum(e.size_bytes for e in entries) / 1e6:.1f} MB",
                  title_justify="left")
    for col in ("stage", "key", "MB", "written", "last used"):
        table.add_column(col, justify="right" if col == "MB" else "left")
    for e in entries:
        table.add_row(e.stage, e.key, f"{e.size_bytes / 1e6:.1f}",
                      time.strftime("%Y-%m-%d %H:%M", time.localtime(e.created)),
                      time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used)))
    return table


def profiles_table(rows):
    """`profile ls`: (path, profile or None, error) per profile file."""
    from rich.table import Table

    from edgekiln.targets.profiles import SHIPPED_DIR

    table = Table(title=escape("latency profiles (a target names one: [[targets]] profile = NAME)"),
                  title_justify="left")
    for col in ("name", "from", "format", "runner", "latency", "budgets", "device"):
        table.add_column(col)
    for path, profile, error in rows:
        origin = "shipped" if path.parent == SHIPPED_DIR else str(path.parent)
        if profile is None:
            table.add_row(path.stem, origin, "-", "-", "-", "-", f"[red]unreadable: {error}[/]")
            continue
        if profile.runner.kind == "estimate":
            latency = "estimated" if profile.estimate is not None else "not measured"
        else:
            latency = "measured" + (" (estimated with allow_estimate when unreachable)" if profile.estimate
                                    is not None else "")
        budgets = ", ".join(f"{k} {v:g}" for k, v in profile.budget.model_dump(exclude_none=True).items())
        table.add_row(profile.name, origin, profile.format, profile.runner.kind, latency, budgets or "-",
                      profile.device)
    return table


def print_plan(plan) -> None:
    """`run --plan`: each stage's loops and conversions, epochs and minutes (expected, and
    from least to most), and the whole run's."""
    from rich.table import Table

    def span(values, fmt):
        return f"{values[0]:{fmt}} ({values[1]:{fmt}}-{values[2]:{fmt}})"

    table = Table(title=f"plan: {plan.train_images} train / {plan.val_images} val images at {plan.image_size} px",
                  title_justify="left")
    for col in ("stage", "work", "epochs", "minutes"):
        table.add_column(col, justify="right" if col in ("epochs", "minutes") else "left")
    for r in plan.rows:
        table.add_row(r.stage, r.what, "-" if r.epochs is None else span(r.epochs, ".0f"), span(r.minutes, ".1f"))
    console.print(table)
    total = plan.minutes
    console.print(f"expected: {total[0]:.0f} min on this machine (from {total[1]:.0f} to {total[2]:.0f}: auto loops "
                  f"stop between one patience window and their cap); planned in {plan.seconds_to_plan:.0f} s. "
                  "Nothing was trained.", markup=False)
    if plan.max_minutes is not None:
        from edgekiln.time_budget import deadline_minutes

        cumulative = [f"{name} until minute {minute:.1f}"
                      for name, minute in deadline_minutes(plan.max_minutes, plan.expected_by_stage()).items()]
        fits = "fits" if total[0] <= plan.max_minutes else "does not fit: auto loops will stop at their stage's deadline"
        console.print(f"time budget: {plan.max_minutes:g} min (pipeline.max_minutes), which the expected time {fits}; "
                      "deadlines: " + ", ".join(cumulative), markup=False)
