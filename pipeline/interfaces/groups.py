"""The `edgekiln profile` and `edgekiln cache` command groups: shells over the API, as the
rest of the command line (interfaces/cli.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgekiln.errors import EXIT_GATE_FAILED, EXIT_OK
from edgekiln.interfaces.exits import exit_codes
from edgekiln.interfaces.quiet import quiet_converters
from edgekiln.progress import console

CACHE_OPTION = typer.Option(None, "--cache-dir", envvar="EDGEKILN_CACHE_DIR",
                             help="stage cache [default: .edgekiln-cache]")


profile_app = typer.Typer(no_args_is_help=True, help="Calibrate latency profiles and see how far to trust them.")


def _model_spec(text: str) -> tuple[str, int]:
    arch, _, size = text.partition("@")
    if not arch or not size.isdigit() or int(size) < 16:
        raise ValueError(f"--model {text!r}: give ARCH@SIZE, e.g. mobilenetv3_small_100@224 (size 16 or more)")
    return arch, int(size)


@profile_app.command("calibrate")
def profile_calibrate(
    profile: str = typer.Argument(..., help="the profile to calibrate: shipped name or path of a .toml"),
    runner: str = typer.Option(..., "--runner", help="how to reach the device: host, adb or ssh"),
    out: Optional[Path] = typer.Option(None, "--out", help="the new profile's .toml (its CSV goes beside it) "
                                       "[default: ./PROFILE-calibrated.toml]"),
    model: list[str] = typer.Option([], "--model", help="reference model ARCH@SIZE instead of the default set "
                                    "(repeat)"),
    encoding: list[str] = typer.Option([], "--encoding", help="only these encodings (repeat) [default: every "
                                       "encoding the profile's format writes]"),
    runs: Optional[int] = typer.Option(None, "--runs", min=10, help="timed runs per artifact [default: the profile's]"),
) -> None:
    """Time a set of reference models on the profile's device (through --runner), write their
    table and a profile that estimates from it, and print its leave-one-out error. Resumable:
    re-run the same command after an interruption and only the missing rows are measured.
    Exit 0 done, 2 bad input or unreachable device (the rows measured so far are kept)."""
    quiet_converters()
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from edgekiln.interfaces import api, tables

    with exit_codes(), Progress(TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console, transient=True) as progress:
        task = progress.add_task("measuring", total=None)

        def on_plan(total: int, done: int, table: Path) -> None:
            progress.update(task, total=total - done)
            console.print(f"{total} reference artifacts for {profile} ({runner} runner): {done} already in "
                          f"{table}, {total - done} to measure")

        def on_row(job, row, refused) -> None:
            progress.advance(task)
            console.print(f"  {job.arch} {job.size} px {job.encoding}: " + (
                f"[yellow]not convertible[/] ({refused})" if refused else f"{float(row['latency_ms']):.3f} ms"))

        try:
            models = [_model_spec(m) for m in model] or None
        except ValueError as e:
            raise api.InputError(str(e)) from None
        done = api.calibrate_profile(profile, runner, out, models=models, encodings=encoding or None, runs=runs,
                                     on_plan=on_plan, on_row=on_row)
    if done.refused:
        console.print(f"[yellow]{len(done.refused)} reference artifact(s) the converter refused[/] (not in the "
                      "table): " + "; ".join(f"{j.arch}@{j.size} {j.encoding}" for j, _ in done.refused))
    console.print(f"wrote {done.table} ({len(done.rows)} rows) and {done.path}")
    console.print(tables.error_table(done.profile))
    console.print(escape(f"use it: [[targets]] profile = \"{done.path}\" (or EDGEKILN_PROFILE_PATH="
                         f"{done.path.parent.resolve()})"))


@profile_app.command("ls")
def profile_ls() -> None:
    """Every profile a target can name: EDGEKILN_PROFILE_PATH's, then the shipped ones, with
    format, runner, whether its latency is measured or estimated, and its budgets."""
    from edgekiln.interfaces import tables
    from edgekiln.targets.profiles import ProfileError, load_profile, profile_files

    rows = []
    for path in profile_files():
        try:
            rows.append((path, load_profile(path), None))
        except ProfileError as e:  # a broken user profile is listed, not fatal
            rows.append((path, None, str(e)))
    console.print(tables.profiles_table(rows))


@profile_app.command("show")
def profile_show(profile: str = typer.Argument(..., help="shipped name or path of a .toml")) -> None:
    """A profile's device, format, runner and budgets, and how far its estimates can be
    trusted: per precision, the leave-one-out error of its reference table."""
    from edgekiln.interfaces import tables
    from edgekiln.targets.profiles import load_profile

    with exit_codes():
        p = load_profile(profile)
    console.print(f"{p.name}: {p.device}\n  {p.description}\n  format {p.format}, runner {p.runner.kind}, "
                  f"budgets {p.budget.model_dump(exclude_none=True)}\n  file {p.path}", soft_wrap=True)
    if p.estimate is None:
        console.print("  no reference table: measured only (calibrate one with `edgekiln profile calibrate`)")
    else:
        console.print(tables.error_table(p))


cache_app = typer.Typer(no_args_is_help=True, help="See, check and prune the stage cache.")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZES = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12}


def _quantity(text: str, units: dict, option: str) -> float:
    import re

    match = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", text)
    unit = (match.group(2).lower() if match else "") or next(iter(units))
    if not match or unit not in units:
        raise typer.BadParameter(f"{text!r}: a number and one of {', '.join(units)}", param_hint=option)
    return float(match.group(1)) * units[unit]


@cache_app.command("ls")
def cache_ls(cache_dir: Optional[Path] = CACHE_OPTION) -> None:
    """List the cache's entries: stage, key, size, when written and last used."""
    from edgekiln.interfaces import api, tables

    console.print(tables.cache_table(cache_dir or Path(".edgekiln-cache"), api.cache_entries(cache_dir)))


@cache_app.command("verify")
def cache_verify(cache_dir: Optional[Path] = CACHE_OPTION,
                 discard: bool = typer.Option(False, "--discard", help="delete the damaged entries")) -> None:
    """Check every entry's files against the sizes and sha256 recorded when it was written.
    Exit 0 all intact, 1 damaged entries found (deleted with --discard)."""
    from edgekiln.interfaces import api

    with exit_codes():
        entries, damaged = api.cache_verify(cache_dir, discard=discard)
    for e, problem in damaged:
        console.print(f"[bold red]{e.stage}/{e.key}:[/] {problem}" + ("; discarded" if discard else ""))
    console.print(f"{len(entries) - len(damaged)} of {len(entries)} entries intact")
    raise typer.Exit(EXIT_GATE_FAILED if damaged else EXIT_OK)


@cache_app.command("gc")
def cache_gc(cache_dir: Optional[Path] = CACHE_OPTION,
             older_than: Optional[str] = typer.Option(None, "--older-than", help="delete entries unused for this "
                                                      "long, e.g. 30d, 12h"),
             max_size: Optional[str] = typer.Option(None, "--max-size", help="then delete the least recently used "
                                                    "until the cache is at most this, e.g. 5GB")) -> None:
    """Prune the cache: entries unused for --older-than, then the least recently used above --max-size."""
    from edgekiln.interfaces import api

    if older_than is None and max_size is None:
        raise typer.BadParameter("give --older-than, --max-size or both", param_hint="gc")
    older_than_s = None if older_than is None else _quantity(older_than, _UNITS, "--older-than")
    max_bytes = None if max_size is None else int(_quantity(max_size, _SIZES, "--max-size"))
    with exit_codes():
        removed = api.cache_gc(cache_dir, older_than_s=older_than_s, max_bytes=max_bytes)
    for e in removed:
        console.print(f"removed {e.stage}/{e.key} ({e.size_bytes / 1e6:.1f} MB)")
    console.print(f"{len(removed)} entries removed, {sum(e.size_bytes for e in removed) / 1e6:.1f} MB freed")
