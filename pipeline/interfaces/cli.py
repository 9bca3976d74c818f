"""`edgekiln` command line: a shell over the API (interfaces/api.py). Each command parses its
arguments, calls the API, prints the result, and maps errors to exit codes in one place
(interfaces/exits.py); the `profile` and `cache` groups are in interfaces/groups.py.

Exit codes: 0 every gate passed, 1 a gate failed, 2 bad config or input, 3 an internal
error (a bug: never reported as a failed gate, so release scripts can tell them apart),
130/143 interrupted (SIGINT/SIGTERM).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from edgekiln.errors import EXIT_BAD_INPUT, EXIT_GATE_FAILED, EXIT_OK
from edgekiln.interfaces import starting
from edgekiln.interfaces.exits import exit_codes, report_failures, verdict
from edgekiln.interfaces.quiet import quiet_converters
from edgekiln.interfaces.groups import CACHE_OPTION, cache_app, profile_app
from edgekiln.progress import console
from edgekiln.targets.format import format_names, get_format

app = typer.Typer(add_completion=False, no_args_is_help=True, context_settings={"help_option_names": ["-h", "--help"]},
                  help="Compress an image classifier into gated mobile artifacts.")

# Artifact suffixes for help text, from the format files (light: no converter is imported).
_SUFFIXES = tuple(get_format(name).SUFFIX for name in format_names())
_JUNIT_OPTION = typer.Option(None, "--junit", help="also write the gates as JUnit XML to this file")


def _version(shown: bool) -> None:
    if shown:
        from edgekiln import __version__

        console.print(f"edgekiln {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print the version and exit")) -> None:
    """edgekiln: your model, or teacher -> distill, then prune -> quantize -> export, gated on accuracy."""


@app.command()
def run(
    config: Path = typer.Argument(..., help="pipeline TOML file"),
    out: Optional[Path] = typer.Option(None, "--out", help="output directory [default: out/<config name>]"),
    cache_dir: Optional[Path] = CACHE_OPTION,
    junit: Optional[Path] = _JUNIT_OPTION,
    compare: Optional[Path] = typer.Option(None, "--compare", help="a base release (output folder or manifest.json):"
                                           " report.html shows the deltas against it (`edgekiln diff` gates them)"),
    verbose: bool = typer.Option(False, "--verbose", help="keep the converters' own output"),
    force: bool = typer.Option(False, "--force", help="write into a non-empty --out that is not an earlier edgekiln "
                               "output, beside its files (an earlier output is replaced as a whole without it)"),
    nproc_per_node: int = typer.Option(1, "--nproc-per-node", min=1, help="train on this many processes "
                                       "(torchrun + DistributedDataParallel: one per GPU, or gloo on the CPU)"),
    plan: bool = typer.Option(False, "--plan", help="print the stages, candidates, epochs and expected minutes on "
                              "this machine, and exit without training"),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", min=0.1, help="finish within this many "
                                                "minutes on this machine: overrides [pipeline] max_minutes"),
) -> None:
    """Run the pipeline CONFIG describes; artifacts, manifest.json, report.html and
    MODEL_CARD.md go to --out."""
    if not verbose:
        quiet_converters()  # before torch's and the hub's imports: tqdm reads TQDM_DISABLE when imported
    if plan:
        from edgekiln.interfaces import api, tables

        with exit_codes():
            tables.print_plan(api.plan(config, max_minutes))
        raise typer.Exit(EXIT_OK)
    from edgekiln.training import distributed

    if nproc_per_node > 1 and "WORLD_SIZE" not in os.environ:
        args = [str(config), *(a for flag, value in (("--out", out), ("--cache-dir", cache_dir), ("--junit", junit),
                                                     ("--compare", compare)) if value is not None
                               for a in (flag, str(value))), *(["--verbose"] if verbose else []),
                *(["--force"] if force else []), *(["--max-minutes", str(max_minutes)] if max_minutes else [])]
        raise typer.Exit(distributed.launch(nproc_per_node, ["run", *args]))
    if distributed.init_from_env() and not distributed.is_leader():
        distributed.follow()  # train what rank 0 trains, until it is done
        raise typer.Exit(EXIT_OK)
    try:
        with exit_codes():
            starting.run_and_report(config, out or Path("out") / config.stem, junit, compare, cache_dir, force,
                                    max_minutes=max_minutes)
    except typer.Exit as e:
        distributed.record_exit_code(e.exit_code)
        raise
    finally:
        distributed.done()


@app.command()
def validate(config: Path = typer.Argument(..., help="pipeline TOML file")) -> None:
    """Check CONFIG without running it (keys, types, ranges, files, profiles, formats and
    encodings), in well under two seconds: nothing here imports torch. Exit 0 valid, 2 not."""
    from edgekiln.interfaces import api

    with exit_codes():
        checked = api.validate(config)
    targets = ", ".join(f"{t.name} ({t.format} on {t.effective_profile.name})" for t in checked.config.targets)
    console.print(f"[green]{config} is valid[/]: {len(checked.config.targets)} target(s): {targets}")
    console.print("stages: " + " → ".join(checked.plan.names) + "".join(
        f"; {name} skipped ({why})" for name, why in checked.plan.skipped.items()), markup=False)
    console.print("checked when the run starts (they need torch): " + "; ".join(checked.deferred))


@app.command()
def check(
    out_dir: Path = typer.Argument(..., help="output directory of `edgekiln run`"),
    profile: list[str] = typer.Option([], "--profile", help="profile to check against instead of the run's own "
                                      "(for the artifacts of its format); repeatable"),
    accuracy: bool = typer.Option(True, "--accuracy/--no-accuracy",
                                  help="re-run each artifact over the val and test splits"),
    allow_estimate: bool = typer.Option(False, "--allow-estimate",
                                        help="estimate latency where the profile's device cannot be reached"),
    junit: Optional[Path] = _JUNIT_OPTION,
) -> None:
    """Verify a finished run for a release build: sha256 of every artifact against the manifest,
    accuracy re-measured in each runtime, latency and memory re-measured on each target's profile
    (or --profile) and checked against its budgets. Exit 0 / 1 / 2 as `run`."""
    quiet_converters()
    from edgekiln.interfaces import api, tables

    with exit_codes():
        result = api.check(out_dir, profiles=profile, accuracy=accuracy, allow_estimate=allow_estimate, junit=junit)
    recorded = {a.target: a for a in result.record.artifacts}
    console.print(tables.checks_table(f"check {out_dir}", result.checks, recorded))
    tables.print_findings(result.checks)
    if not result.run_passed:
        console.print("[bold red]the run itself did not pass its gates[/] (manifest: passed false)")
    if result.unchecked and result.require_checked:
        console.print(f"[bold red]release.require_checked = true:[/] the {len(result.unchecked)} budget(s) not "
                      "checked fail the check")
    verdict(result.passed, len(result.unchecked))


@app.command()
def diff(
    base: Path = typer.Argument(..., help="the last release: an output folder of `edgekiln run` or its manifest.json"),
    new: Path = typer.Argument(..., help="the new run: an output folder or its manifest.json"),
    max_accuracy_drop: Optional[float] = typer.Option(
        None, "--max-accuracy-drop", min=0, help="points of test accuracy a target may lose [release.max_accuracy_drop]"),
    max_latency_increase: Optional[float] = typer.Option(
        None, "--max-latency-increase", min=0, help="percent p50/p90 may grow [release.max_latency_increase]"),
    max_size_increase: Optional[float] = typer.Option(
        None, "--max-size-increase", min=0, help="percent an artifact may grow [release.max_size_increase]"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the comparison as JSON here"),
    junit: Optional[Path] = _JUNIT_OPTION,
    html: Optional[Path] = typer.Option(None, "--html", help="also write NEW's report.html with the deltas here"),
) -> None:
    """Compare a run with the last release, target by target: accuracy, latency, memory, size,
    encoding, params and MACs, and what changed upstream. Figures that are not comparable
    (other images, other source, profile or device) are shown and never gate.
    Exit 0 no regression beyond the thresholds, 1 regressions, 2 bad input (a malformed
    manifest or predictions file, or an artifact record without its figures)."""
    from edgekiln.interfaces import api, tables

    with exit_codes():
        result = api.diff(base, new, max_accuracy_drop=max_accuracy_drop, max_latency_increase=max_latency_increase,
                          max_size_increase=max_size_increase, json_out=json_out, junit=junit, html=html)
    console.print(tables.diff_table(result))
    for change in result.lineage:
        console.print(f"changed upstream: {change.metric} {change.base} -> {change.new}", markup=False)
    for note in result.notes:
        console.print(f"note: {note}", markup=False)
    for target, change in result.regressions:  # its "[paired over N images: ...]" is text, not markup
        console.print(f"[bold red]{escape(change.message(target))}")
    limits = ", ".join(f"{result.threshold_keys[k]} = {v:g}" for k, v in result.thresholds.items())
    if result.incomplete:  # a record without its figures is bad input, never a pass
        for t in result.incomplete:
            console.print(f"[bold red]target {escape(t.target)} is not comparable:[/] {escape(t.why)}")
        console.print(f"[bold red]NOT COMPARABLE[/] ({len(result.incomplete)} target(s) without the figures a "
                      "release is judged on)")
        raise typer.Exit(EXIT_BAD_INPUT)
    console.print(("[bold green]NO REGRESSION" if result.passed else
                   f"[bold red]{len(result.regressions)} REGRESSION(S)") + f"[/] (thresholds: {limits})")
    raise typer.Exit(EXIT_OK if result.passed else EXIT_GATE_FAILED)


@app.command()
def report(
    out_dir: Path = typer.Argument(..., help="output directory of `edgekiln run`"),
    compare: Optional[Path] = typer.Option(None, "--compare", help="a base release: show the deltas against it"),
) -> None:
    """(Re)write a run's report.html, report.png, tradeoff.png and MODEL_CARD.md from its manifest."""
    from edgekiln.interfaces import api

    with exit_codes():
        try:
            paths = api.report(out_dir, compare=compare)
        except api.ReportError as e:  # some reports written, others not: which, and why
            if e.paths:
                console.print("wrote " + ", ".join(str(p) for p in e.paths.values()))
            raise typer.Exit(report_failures(e.failures, "the run's manifest and artifacts are unchanged"))
    console.print("wrote " + ", ".join(str(p) for p in paths.values()))


@app.command()
def bench(
    artifact: Path = typer.Argument(..., help="an artifact file (" + ", ".join(_SUFFIXES) + ")"),
    profile: str = typer.Option(..., "--profile", help="latency profile: shipped name or path of a .toml"),
    allow_estimate: bool = typer.Option(False, "--allow-estimate",
                                        help="estimate latency where the profile's device cannot be reached"),
    runner: Optional[str] = typer.Option(None, "--runner", help="host, adb, ssh or estimate instead of the "
                                         "profile's runner (e.g. compare an estimate with a measurement)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the result as JSON here"),
) -> None:
    """Measure one artifact on a latency profile (host, device over adb/ssh, or estimate) and
    check it against the profile's budgets; sha256 against a manifest.json beside it.
    Exit 0 within budget, 1 over budget or sha256 mismatch, 2 bad input or unreachable device."""
    quiet_converters()
    from edgekiln.interfaces import api, tables

    with exit_codes():
        result = api.bench(artifact, profile, allow_estimate=allow_estimate, runner=runner, json_out=json_out)
    console.print(tables.checks_table(f"bench {artifact}", [result]))
    tables.print_findings([result])
    verdict(result.passed, len(result.budgets_not_checked))


app.command()(starting.compress)
app.command()(starting.init)
app.add_typer(profile_app, name="profile")
app.add_typer(cache_app, name="cache")


def main() -> None:
    sys.exit(app())


if __name__ == "__main__":
    main()
