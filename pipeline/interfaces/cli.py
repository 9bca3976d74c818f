"""`edgekiln` command line.

Exit codes: 0 every gate passed, 1 a gate failed, 2 bad config or input, 3 an internal
error (a bug: never reported as a failed gate, so release scripts can tell them apart).
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Optional

import typer

from edgekiln.targets.format import format_names, get_format

EXIT_OK, EXIT_GATE_FAILED, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Compress an image classifier into gated mobile artifacts.")


# Artifact suffixes for help text, from the format files (light: no converter is imported).
_SUFFIXES = tuple(get_format(name).SUFFIX for name in format_names())


@app.callback()
def _root() -> None:
    """edgekiln: teacher -> distill -> prune -> quantize -> export, gated on accuracy."""


def _quiet_converters() -> None:
    # The converters print pages of progress of their own; ours is enough.
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore")
    import logging

    for name in ("coremltools", "torch", "onnxruntime", "root"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _checked_config(path: Path):
    """The validated config, its files checked; exit 2 naming the problem otherwise."""
    from edgekiln.engine.config import ConfigError, check_files, load_config
    from edgekiln.progress import console

    try:
        cfg = load_config(path)
        check_files(cfg)
    except ConfigError as e:
        console.print(f"[bold red]config error:[/] {e}", soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT)
    return cfg


_JUNIT_OPTION = typer.Option(None, "--junit", help="also write the gates as JUnit XML to this file")


@app.command()
def run(
    config: Path = typer.Argument(..., help="pipeline TOML file"),
    out: Optional[Path] = typer.Option(None, "--out", help="output directory [default: out/<config name>]"),
    cache_dir: Optional[Path] = typer.Option(
        None, "--cache-dir", envvar="EDGEKILN_CACHE_DIR", help="stage cache [default: .edgekiln-cache]"),
    junit: Optional[Path] = _JUNIT_OPTION,
    compare: Optional[Path] = typer.Option(None, "--compare", help="a base release (output folder or manifest.json):"
                                           " report.html shows the deltas against it (`edgekiln diff` gates them)"),
    verbose: bool = typer.Option(False, "--verbose", help="keep the converters' own output"),
    force: bool = typer.Option(False, "--force", help="write into a non-empty --out that is not an earlier edgekiln "
                               "output, beside its files (an earlier output is replaced as a whole without it)"),
    nproc_per_node: int = typer.Option(1, "--nproc-per-node", min=1, help="train on this many processes "
                                       "(torchrun + DistributedDataParallel: one per GPU, or gloo on the CPU)"),
) -> None:
    """Run the pipeline CONFIG describes; artifacts, manifest.json, report.html and
    MODEL_CARD.md go to --out."""
    if nproc_per_node > 1 and "WORLD_SIZE" not in os.environ:
        args = [str(config), *(a for flag, value in (("--out", out), ("--cache-dir", cache_dir), ("--junit", junit),
                                                     ("--compare", compare)) if value is not None
                               for a in (flag, str(value))), *(["--verbose"] if verbose else []),
                *(["--force"] if force else [])]
        raise typer.Exit(_launch(nproc_per_node, args))
    from edgekiln.training import distributed

    if distributed.init_from_env() and not distributed.is_leader():
        distributed.follow()  # train what rank 0 trains, until it is done
        raise typer.Exit(EXIT_OK)
    try:
        _run(config, out, junit, compare, verbose, cache_dir, force)
    except typer.Exit as e:
        distributed.record_exit_code(e.exit_code)
        raise
    finally:
        distributed.done()


def _launch(nproc: int, args: list[str]) -> int:
    """`edgekiln run ARGS` on `nproc` local processes through torchrun's launcher; the exit
    code is rank 0's (0, 1 or 2), or 3 when another rank failed first."""
    import tempfile
    import uuid

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from edgekiln.progress import console
    from edgekiln.training import distributed

    # As torchrun does: processes that share the cores must not each start a thread per core
    # (OpenMP threads spin while they wait: oversubscribed, training ran 10x slower).
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    launch = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=uuid.uuid4().hex,
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.5)
    # Rank 0 writes the exit code it decided on here: the launcher's view of it is lost when
    # another rank's exit is seen first and rank 0 is stopped before its own exit.
    with tempfile.TemporaryDirectory(prefix="edgekiln-launch-") as scratch:
        os.environ[distributed.EXIT_CODE_FILE] = str(Path(scratch) / "exit_code")
        try:
            elastic_launch(launch, sys.executable)("-m", "edgekiln.interfaces.cli", "run", *args)
            codes = {}
        except ChildFailedError as e:
            codes = {rank: failure.exitcode for rank, failure in e.failures.items()}
        finally:
            recorded = distributed.recorded_exit_code()
            del os.environ[distributed.EXIT_CODE_FILE]
    if recorded is not None:
        return recorded
    if not codes:
        return EXIT_OK
    if codes.get(0) in (EXIT_GATE_FAILED, EXIT_BAD_INPUT, EXIT_INTERNAL):
        return codes[0]
    first = min(codes)
    console.print(f"[bold red]rank {first} of {nproc} failed (exit code {codes[first]}); every rank was "
                  "stopped: see its output above")
    return EXIT_INTERNAL


def _run(config: Path, out: Optional[Path], junit: Optional[Path], compare: Optional[Path], verbose: bool,
         cache_dir: Optional[Path], force: bool = False) -> None:
    if not verbose:
        _quiet_converters()
    from edgekiln.engine.config import ConfigError
    from edgekiln.engine.manifest import PublishError
    from edgekiln.errors import InputError, TrainingDiverged
    from edgekiln.interfaces import api
    from edgekiln.progress import console
    from edgekiln.release import summary
    from edgekiln.targets.errors import ConversionError
    from edgekiln.targets.interrupts import Interrupted

    out = out or Path("out") / config.stem

    def manifest_note(error: BaseException, extra: str = "") -> None:  # the manifest this run wrote, if any
        if getattr(error, "manifest_path", None) is not None:
            console.print(f"(manifest with the error: {error.manifest_path}{extra})")

    try:
        result = api.run(config, out, cache_dir, junit=junit, compare=compare, force=force)
    except Interrupted as e:
        stage = getattr(e, "stage", None)
        console.print(f"[bold red]interrupted[/] by {e.signal}" + (f" during stage {stage}" if stage else "") +
                      ": the stages finished before it are cached and the one under way keeps its epoch "
                      "checkpoints, so a re-run resumes there")
        manifest_note(e)
        raise typer.Exit(e.exit_code)
    except ConfigError as e:
        console.print(f"[bold red]config error:[/] {e}", soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT)
    except (InputError, ConversionError, PublishError) as e:
        console.print(f"[bold red]input error:[/] {e}")
        manifest_note(e)
        raise typer.Exit(EXIT_BAD_INPUT)
    except TrainingDiverged as e:  # the run failed on its own terms, as a gate would; nothing of it was cached
        console.print(f"[bold red]training diverged:[/] {e}")
        manifest_note(e, "; nothing of that stage was cached")
        raise typer.Exit(EXIT_GATE_FAILED)
    except Exception as e:
        console.print_exception()
        console.print("[bold red]internal error[/] (a bug in edgekiln)")
        manifest_note(e)
        raise typer.Exit(EXIT_INTERNAL)
    if not result.published:
        raise typer.Exit(_report_failures(
            result.report_failures, f"nothing was published: {out} keeps what it held, since even the manifest "
            "saying so could not be written; every stage is cached, so a re-run with room for the outputs is warm"))
    summary.print_summary(result.manifest, result.paths["manifest"])
    for gate in result.failed_gates:
        console.print(f"[bold red]{gate.message()}")
    console.print("reports: " + ", ".join(str(result.paths[k]) for k in ("report_html", "model_card", "junit")
                                          if k in result.paths))
    verdict = EXIT_OK if result.passed else EXIT_GATE_FAILED
    if result.report_failures:
        refused = any(not f.bug for f in result.report_failures)
        raise typer.Exit(_report_failures(
            result.report_failures, ("the run is not whole, so its manifest says passed: false" if refused else
                                     f"the run's gates {'passed' if result.passed else 'failed'}") +
            "; its artifacts and manifest.json are written, and the manifest names the missing reports under "
            "report_errors"))
    raise typer.Exit(verdict)


def _report_failures(failures, after: str) -> int:
    """Say which reports could not be written and why; the exit code: 3 for a bug in the
    report step (its traceback shown), else 2 (an output that cannot be written)."""
    from rich.traceback import Traceback

    from edgekiln.progress import console

    for f in failures:
        if f.bug:
            console.print(Traceback.from_exception(type(f.error), f.error, f.error.__traceback__))
        console.print(f"[bold red]{f.name} was not written:[/] {f.message()}")
    console.print(f"({after})")
    return EXIT_INTERNAL if any(f.bug for f in failures) else EXIT_BAD_INPUT


@app.command()
def validate(config: Path = typer.Argument(..., help="pipeline TOML file")) -> None:
    """Check CONFIG without running it (keys, types, ranges, files, profiles, formats and
    encodings), in well under two seconds: nothing here imports torch. Exit 0 valid, 2 not."""
    from edgekiln.engine.config import DEFERRED_CHECKS
    from edgekiln.progress import console  # rich only: no torch

    cfg = _checked_config(config)
    targets = ", ".join(f"{t.name} ({t.format} on {t.effective_profile.name})" for t in cfg.targets)
    console.print(f"[green]{config} is valid[/]: {len(cfg.targets)} target(s): {targets}")
    console.print("checked when the run starts (they need torch): " + "; ".join(DEFERRED_CHECKS))
    raise typer.Exit(EXIT_OK)


def _checks_table(title: str, checks, recorded: dict | None = None):
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
            manifest_test = recorded[c.target].get("test_accuracy")
            row += [f"{recorded[c.target]['accuracy']:.2f}", "-" if c.test_accuracy is None else f"{c.test_accuracy:.2f}",
                    "-" if manifest_test is None else f"{manifest_test:.2f}"]
        row += [c.profile or "-", m.get("source") or "not measured",
                "-" if lat.get("p50") is None else f"{lat['p50']:.3f}",
                "-" if lat.get("p90") is None else f"{lat['p90']:.3f}",
                "-" if m.get("peak_memory_mb") is None else f"{m['peak_memory_mb']:.1f}",
                "pass" if c.passed else "[red]FAIL"]
        table.add_row(*row)
    return table


def _print_findings(checks) -> None:
    from edgekiln.progress import console

    for c in checks:
        for line in c.problems:
            console.print(f"[bold red]{c.target}:[/] {line}")
        for gate in c.budgets:
            console.print(("" if gate.passed else "[bold red]") + gate.message())
        for line in c.notes + c.budgets_not_checked:
            console.print(f"{c.target}: {line}")


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
    _quiet_converters()
    from edgekiln.errors import InputError
    from edgekiln.interfaces import api
    from edgekiln.progress import console

    try:
        result = api.check(out_dir, profiles=profile, accuracy=accuracy, allow_estimate=allow_estimate, junit=junit)
    except InputError as e:
        console.print(f"[bold red]input error:[/] {e}")
        raise typer.Exit(EXIT_BAD_INPUT)
    recorded = {a["target"]: a for a in result.manifest["artifacts"]}
    console.print(_checks_table(f"check {out_dir}", result.checks, recorded))
    _print_findings(result.checks)
    if not result.run_passed:
        console.print("[bold red]the run itself did not pass its gates[/] (manifest: passed false)")
    console.print("[bold green]PASSED" if result.passed else "[bold red]FAILED")
    raise typer.Exit(EXIT_OK if result.passed else EXIT_GATE_FAILED)


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
    from edgekiln.errors import InputError
    from edgekiln.interfaces import api
    from edgekiln.progress import console

    try:
        result = api.diff(base, new, max_accuracy_drop=max_accuracy_drop, max_latency_increase=max_latency_increase,
                          max_size_increase=max_size_increase, json_out=json_out, junit=junit, html=html)
    except InputError as e:
        console.print(f"[bold red]input error:[/] {e}")
        raise typer.Exit(EXIT_BAD_INPUT)
    console.print(_diff_table(result))
    for change in result.lineage:
        console.print(f"changed upstream: {change.metric} {change.base} -> {change.new}")
    for note in result.notes:
        console.print(f"note: {note}")
    for target, change in result.regressions:
        console.print(f"[bold red]{change.message(target)}")
    limits = ", ".join(f"{result.threshold_keys[k]} = {v:g}" for k, v in result.thresholds.items())
    if result.incomplete:  # a record without its figures is bad input, never a pass
        for t in result.incomplete:
            console.print(f"[bold red]target {t.target} is not comparable:[/] {t.why}")
        console.print(f"[bold red]NOT COMPARABLE[/] ({len(result.incomplete)} target(s) without the figures a "
                      "release is judged on)")
        raise typer.Exit(EXIT_BAD_INPUT)
    console.print(("[bold green]NO REGRESSION" if result.passed else
                   f"[bold red]{len(result.regressions)} REGRESSION(S)") + f"[/] (thresholds: {limits})")
    raise typer.Exit(EXIT_OK if result.passed else EXIT_GATE_FAILED)


def _diff_table(result):
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


@app.command()
def report(
    out_dir: Path = typer.Argument(..., help="output directory of `edgekiln run`"),
    compare: Optional[Path] = typer.Option(None, "--compare", help="a base release: show the deltas against it"),
) -> None:
    """(Re)write a run's report.html, report.png, tradeoff.png and MODEL_CARD.md from its manifest."""
    from edgekiln.errors import InputError
    from edgekiln.interfaces import api
    from edgekiln.progress import console

    try:
        paths = api.report(out_dir, compare=compare)
    except InputError as e:
        console.print(f"[bold red]input error:[/] {e}")
        raise typer.Exit(EXIT_BAD_INPUT)
    except api.ReportError as e:
        if e.paths:
            console.print("wrote " + ", ".join(str(p) for p in e.paths.values()))
        raise typer.Exit(_report_failures(e.failures, "the run's manifest and artifacts are unchanged"))
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
    _quiet_converters()
    from edgekiln.errors import InputError
    from edgekiln.progress import console
    from edgekiln.release.verify import bench_artifact

    try:
        result = bench_artifact(artifact, profile, allow_estimate=allow_estimate, runner=runner)
    except InputError as e:
        console.print(f"[bold red]input error:[/] {e}")
        raise typer.Exit(EXIT_BAD_INPUT)
    console.print(_checks_table(f"bench {artifact}", [result]))
    _print_findings([result])
    if json_out is not None:
        json_out.write_text(json.dumps({"artifact": str(artifact), "profile": result.profile,
                                        "passed": result.passed, "measurement": result.measurement,
                                        "sha256_matches": result.sha256_matches, "problems": result.problems,
                                        "budgets": [b.to_dict() for b in result.budgets], "notes": result.notes,
                                        "budgets_not_checked": result.budgets_not_checked},
                                       indent=2))
    console.print("[bold green]PASSED" if result.passed else "[bold red]FAILED")
    raise typer.Exit(EXIT_OK if result.passed else EXIT_GATE_FAILED)


profile_app = typer.Typer(no_args_is_help=True, help="Calibrate latency profiles and see how far to trust them.")
app.add_typer(profile_app, name="profile")


def _model_spec(text: str) -> tuple[str, int]:
    arch, _, size = text.partition("@")
    if not arch or not size.isdigit() or int(size) < 16:
        raise ValueError(f"--model {text!r}: give ARCH@SIZE, e.g. mobilenetv3_small_100@224 (size 16 or more)")
    return arch, int(size)


def _error_table(profile):
    from rich.table import Table

    from edgekiln.targets.runners.estimate import MAX_MEDIAN_ERROR_PCT, MIN_ROWS, error_table

    table = Table(title=f"{profile.name}: leave-one-out error of its estimates ({profile.references_path().name})",
                  title_justify="left")
    for col in ("precision", "rows", "model", "fixed ms", "LOO median %", "LOO mean %", "LOO worst %", "estimates"):
        table.add_column(col, justify="left" if col in ("precision", "model", "estimates") else "right")
    for row in error_table(profile):
        table.add_row(row["precision"], str(row["rows"]), row["model"],
                      "-" if row["fixed_ms"] is None else f"{row['fixed_ms']:.3g}",
                      *("-" if row[k] is None else f"{row[k]:.0f}" for k in ("loo_median_pct", "loo_mean_pct",
                                                                              "loo_worst_pct")),
                      f"order of magnitude only: {row['order_of_magnitude']}" if row["order_of_magnitude"]
                      else "decide budgets")
    table.caption = (f"An estimate decides a budget only with {MIN_ROWS}+ rows of its precision and a leave-one-out "
                     f"median error under {MAX_MEDIAN_ERROR_PCT:g}%.")
    return table


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
    _quiet_converters()
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from edgekiln.progress import console
    from edgekiln.targets import device_calibration
    from edgekiln.targets.errors import DeviceUnreachable, RunnerFailed, RuntimeUnavailable
    from edgekiln.targets.profiles import ProfileError, load_profile

    try:
        if runner not in ("host", "adb", "ssh"):
            raise ValueError(f"--runner {runner!r}: use host, adb or ssh (a profile is calibrated by measuring)")
        models = [_model_spec(m) for m in model] or None
        source = load_profile(profile)
        out = out or Path(f"{source.name}-calibrated.toml")
        if out.suffix != ".toml":
            raise ValueError(f"--out {out}: the new profile's file name must end in .toml")
        out_csv = out.with_name(f"{out.stem}.references.csv")
        if runner == "host" and (why := get_format(source.format).runtime_unavailable()) is not None:
            raise ValueError(f"the host runner cannot time {source.format} here: {why}")
        spec = {"kind": runner, **({"runs": runs} if runs else {})}
        measuring = source.model_copy(update={"runner": source.runner.model_copy(update=spec)})
        todo = device_calibration.jobs(measuring, models, encoding or None)
        left = device_calibration.pending(todo, device_calibration.read_rows(out_csv))
        console.print(f"{len(todo)} reference artifacts for {source.name} ({source.format}, {runner} runner): "
                      f"{len(todo) - len(left)} already in {out_csv}, {len(left)} to measure")
        with Progress(TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as progress:
            task = progress.add_task("measuring", total=len(left))

            def on_row(job, row, refused):
                progress.advance(task)
                what = f"{job.arch} {job.size} px {job.encoding}"
                console.print(f"  {what}: " + (f"[yellow]not convertible[/] ({refused})" if refused
                                               else f"{float(row['latency_ms']):.3f} ms"))

            rows, refused = device_calibration.calibrate(measuring, out_csv, left, on_row)
        device_calibration.write_profile(source, runner, out, out_csv, rows)
        calibrated = load_profile(out.resolve())
    except (ProfileError, ValueError, DeviceUnreachable, RuntimeUnavailable, RunnerFailed) as e:
        console.print(f"[bold red]input error:[/] {e}", soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT)
    except OSError as e:  # --out's folder cannot be written: bad input, and the rows so far are kept
        console.print(f"[bold red]input error:[/] cannot write {e.filename or out}: {e.strerror or e}", soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT)
    if refused:
        console.print(f"[yellow]{len(refused)} reference artifact(s) the converter refused[/] (not in the table): "
                      + "; ".join(f"{j.arch}@{j.size} {j.encoding}" for j, _ in refused))
    console.print(f"wrote {out_csv} ({len(rows)} rows) and {out}")
    console.print(_error_table(calibrated))
    console.print(escape(f"use it: [[targets]] profile = \"{out}\" (or EDGEKILN_PROFILE_PATH={out.parent.resolve()})"))


@profile_app.command("show")
def profile_show(profile: str = typer.Argument(..., help="shipped name or path of a .toml")) -> None:
    """A profile's device, format, runner and budgets, and how far its estimates can be
    trusted: per precision, the leave-one-out error of its reference table."""
    from edgekiln.progress import console
    from edgekiln.targets.profiles import ProfileError, load_profile

    try:
        p = load_profile(profile)
    except ProfileError as e:
        console.print(f"[bold red]input error:[/] {e}", soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT)
    console.print(f"{p.name}: {p.device}\n  {p.description}\n  format {p.format}, runner {p.runner.kind}, "
                  f"budgets {p.budget.model_dump(exclude_none=True)}\n  file {p.path}", soft_wrap=True)
    if p.estimate is None:
        console.print("  no reference table: measured only (calibrate one with `edgekiln profile calibrate`)")
    else:
        console.print(_error_table(p))


cache_app = typer.Typer(no_args_is_help=True, help="See, check and prune the stage cache.")
app.add_typer(cache_app, name="cache")
_CACHE_OPTION = typer.Option(None, "--cache-dir", envvar="EDGEKILN_CACHE_DIR",
                             help="stage cache [default: .edgekiln-cache]")
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
def cache_ls(cache_dir: Optional[Path] = _CACHE_OPTION) -> None:
    """List the cache's entries: stage, key, size, when written and last used."""
    import time

    from rich.table import Table

    from edgekiln.engine.cache import StageCache
    from edgekiln.progress import console

    entries = StageCache(cache_dir or Path(".edgekiln-cache")).entries()
    table = Table(title=f"{cache_dir or '.edgekiln-cache'}: {len(entries)} entries, "
                        f"{sum(e.size_bytes for e in entries) / 1e6:.1f} MB", title_justify="left")
    for col in ("stage", "key", "MB", "written", "last used"):
        table.add_column(col, justify="right" if col == "MB" else "left")
    for e in entries:
        table.add_row(e.stage, e.key, f"{e.size_bytes / 1e6:.1f}", time.strftime("%Y-%m-%d %H:%M", time.localtime(e.created)),
                      time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used)))
    console.print(table)


@cache_app.command("verify")
def cache_verify(cache_dir: Optional[Path] = _CACHE_OPTION,
                 discard: bool = typer.Option(False, "--discard", help="delete the damaged entries")) -> None:
    """Check every entry's files against the sizes and sha256 recorded when it was written.
    Exit 0 all intact, 1 damaged entries found (deleted with --discard)."""
    from edgekiln.engine.cache import StageCache, verify_entry
    from edgekiln.progress import console

    cache = StageCache(cache_dir or Path(".edgekiln-cache"))
    damaged = 0
    entries = cache.entries()
    for e in entries:
        problem = verify_entry(e.path)
        if problem is not None:
            damaged += 1
            console.print(f"[bold red]{e.stage}/{e.key}:[/] {problem}" + ("; discarded" if discard else ""))
            if discard:
                cache.discard(e.path, problem)
    console.print(f"{len(entries) - damaged} of {len(entries)} entries intact")
    raise typer.Exit(EXIT_GATE_FAILED if damaged else EXIT_OK)


@cache_app.command("gc")
def cache_gc(cache_dir: Optional[Path] = _CACHE_OPTION,
             older_than: Optional[str] = typer.Option(None, "--older-than", help="delete entries unused for this "
                                                      "long, e.g. 30d, 12h"),
             max_size: Optional[str] = typer.Option(None, "--max-size", help="then delete the least recently used "
                                                    "until the cache is at most this, e.g. 5GB")) -> None:
    """Prune the cache: entries unused for --older-than, then the least recently used above --max-size."""
    from edgekiln.engine.cache import StageCache
    from edgekiln.progress import console

    if older_than is None and max_size is None:
        raise typer.BadParameter("give --older-than, --max-size or both", param_hint="gc")
    removed = StageCache(cache_dir or Path(".edgekiln-cache")).gc(
        None if older_than is None else _quantity(older_than, _UNITS, "--older-than"),
        None if max_size is None else int(_quantity(max_size, _SIZES, "--max-size")))
    for e in removed:
        console.print(f"removed {e.stage}/{e.key} ({e.size_bytes / 1e6:.1f} MB)")
    console.print(f"{len(removed)} entries removed, {sum(e.size_bytes for e in removed) / 1e6:.1f} MB freed")


def main() -> None:
    sys.exit(app())


if __name__ == "__main__":
    main()
