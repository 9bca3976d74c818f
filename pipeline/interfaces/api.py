"""The Python API: `edgekiln.run`, `load` (a finished run, typed), `validate`, `check`, `diff`, `report`, `bench`,
`calibrate_profile` and the cache's `cache_entries`, `cache_verify` and `cache_gc`. The
command line is a shell over these (it adds printing and exit codes).

Errors are exceptions: `ConfigError` (the config), `InputError` (files, data, devices),
`ConversionError` (a converter failed), `PublishError` (an artifact changed in the cache),
`TrainingDiverged` (a stage's training blew up). A run whose gates fail is not an error: its
result says `passed = False` and which gates failed. A report that cannot be written after a
finished run is not an error either: the artifacts and manifest stay, and the result's
`report_failures` say which report and why (`report` raises ReportError for them).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any
from pathlib import Path

from edgekiln.engine.config import (PipelineConfig, check_files, config_from_dict, config_from_text, load_config,
                                    read_config_text)
from edgekiln.engine.manifest import read_manifest, read_run, write_text
from edgekiln.engine.manifest_schema import run_record
from edgekiln.errors import InputError
from edgekiln.gates import BudgetCheck, GateCheck
from edgekiln.release.regression import RunDiff, diff_runs
from edgekiln.targets.artifact import Artifact

__all__ = ["RunResult", "FinishedRun", "CheckResult", "ReportFailure", "ReportError", "Validation", "Calibration", "run", "validate",
           "check", "diff", "report", "bench", "calibrate_profile", "cache_entries", "cache_verify", "cache_gc", "load"]

DEFAULT_CACHE = ".edgekiln-cache"  # --cache-dir and EDGEKILN_CACHE_DIR override it


def _cache_dir(given: str | Path | None) -> Path:
    """The stage cache: `given`, else EDGEKILN_CACHE_DIR (as on the command line), else .edgekiln-cache."""
    return Path(given or os.environ.get("EDGEKILN_CACHE_DIR") or DEFAULT_CACHE)


@dataclass
class ReportFailure:
    """A report of a finished run that could not be written: which, where and why. An
    OSError (a full disk, a read-only folder) is the environment's; anything else is a bug
    in edgekiln's report step."""

    name: str  # "report.html", "MODEL_CARD.md", "report.png and tradeoff.png"
    path: Path
    error: BaseException

    @property
    def bug(self) -> bool:
        return not isinstance(self.error, OSError)

    def message(self) -> str:
        if self.bug:
            return f"a bug in edgekiln's report step: {type(self.error).__name__}: {self.error}"
        from edgekiln.system.disk import reason

        return f"cannot write {self.path}: {reason(self.error, self.path)}"


class ReportError(Exception):
    """`report` could not write some of a run's reports (the others were written)."""

    def __init__(self, failures: list[ReportFailure], paths: dict[str, Path]):
        self.failures, self.paths = failures, paths
        super().__init__("; ".join(f"{f.name}: {f.message()}" for f in failures))


@dataclass
class RunResult:
    """What `run` produced: the verdict, every gate, the artifacts and where each file is."""

    passed: bool
    out_dir: Path
    manifest: dict  # manifest.json as written
    # The same, as its RunRecord (engine/manifest_schema.py): what the reports rendered; None
    # only when the manifest does not fit its own schema (a bug, in `report_failures`).
    record: Any
    gates: list[GateCheck | BudgetCheck]
    artifacts: list[Artifact]
    error: str | None = None
    paths: dict[str, Path] = field(default_factory=dict)  # manifest, reports, junit, and each artifact by target
    # Budgets set but not checked ("target NAME: KEY = LIMIT not checked: why"): a pass with
    # any is "PASSED with N budgets not checked" (`verdict`); [release] require_checked fails it.
    unchecked: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        from edgekiln.gates import verdict

        return verdict(self.passed, len(self.unchecked))
    report_failures: list[ReportFailure] = field(default_factory=list)  # reports not written (the others were)
    published: bool = True  # False: the disk refused the outputs, and `out_dir` keeps what it held

    @property
    def failed_gates(self) -> list[GateCheck | BudgetCheck]:
        return [g for g in self.gates if not g.passed]


@dataclass
class CheckResult:
    """What `check` found: per artifact its sha256, re-measured accuracy and budgets. A budget
    it could not decide is listed in `unchecked`; the run's [release] require_checked makes
    that a failure, as it does for `run`."""

    passed: bool
    out_dir: Path
    record: Any  # the run's RunRecord
    checks: list  # verify.ArtifactCheck
    run_passed: bool
    paths: dict[str, Path] = field(default_factory=dict)
    require_checked: bool = False

    @property
    def unchecked(self) -> list[str]:
        """Every budget the check could not decide, "target NAME: why"."""
        return [f"target {c.target}: {line}" for c in self.checks for line in c.budgets_not_checked]

    @property
    def verdict(self) -> str:
        from edgekiln.gates import verdict

        return verdict(self.passed, len(self.unchecked))


@dataclass
class FinishedRun:
    """A finished run read back from its output folder (`load`): its RunRecord (the manifest
    validated and typed: `record.artifacts[0].test_accuracy`, `record.quantize.ladder`), its
    gates as objects, and its artifacts."""

    out_dir: Path
    record: Any  # RunRecord (engine/manifest_schema.py; edgekiln/schemas/manifest.schema.json)
    manifest: dict  # the same, as JSON
    gates: list  # GateCheck | BudgetCheck | NotChecked, every gate record of the manifest
    artifacts: list[Artifact]

    @property
    def schema_version(self) -> int:
        return self.record.version

    @property
    def passed(self) -> bool | None:
        return self.record.passed

    @property
    def unchecked(self) -> list[str]:
        return list(self.record.unchecked)

    @property
    def verdict(self) -> str:
        from edgekiln.gates import verdict

        return self.record.verdict or verdict(self.passed, len(self.unchecked))

    @property
    def failed_gates(self) -> list:
        return [g for g in self.gates if g.passed is False]


def load(out_dir: str | Path) -> FinishedRun:
    """A finished run from its output folder (or its manifest.json), typed. InputError when
    there is no manifest, or it does not fit the schema (naming the field)."""
    from edgekiln.gates import gate_from_dict

    manifest, record, path = read_manifest(Path(out_dir))
    return FinishedRun(out_dir=path.parent, record=record, manifest=manifest,
                       gates=[gate_from_dict(g) for g in manifest.get("gates") or []],
                       artifacts=[Artifact.from_dict(a) for a in manifest["artifacts"]])


def config_of(config: str | Path | dict, base: str | Path | None = None) -> tuple[PipelineConfig, str, str]:
    """A validated config from a TOML file path, TOML text or a dict, with its text (what the
    manifest's config_sha256 hashes) and a name. Relative paths in text or a dict are
    relative to `base` (default: the working directory); in a file, to the file. ConfigError
    when invalid."""
    base = None if base is None else Path(base)
    if isinstance(config, dict):
        return config_from_dict(config, base=base), json.dumps(config, sort_keys=True, default=str), "config"
    if _is_text(config):
        return config_from_text(config, base=base), config, "config"
    path = Path(config)
    cfg = load_config(path)
    return cfg, read_config_text(path), path.stem


def _is_text(config) -> bool:
    """A config given as TOML text rather than a file path."""
    return isinstance(config, str) and ("\n" in config or "=" in config)


def run(config: str | Path | dict, out: str | Path | None = None, cache_dir: str | Path | None = None, *,
        junit: str | Path | None = None, compare: str | Path | None = None, force: bool = False,
        keep_config: bool = False, max_minutes: float | None = None,
        base: str | Path | None = None) -> RunResult:
    """Run the pipeline `config` describes: artifacts, manifest.json, report.png,
    tradeoff.png, report.html and MODEL_CARD.md go to `out` (default out/<config name>).
    `junit`: also write the gates as JUnit XML there (also when the run ends in an error).
    `compare`: a base release (output folder or manifest.json) whose deltas report.html shows.
    `keep_config`: also write the config's text to `out`/config.toml (a config built by a
    command: `edgekiln run out/config.toml` reproduces the run).
    `base`: the folder relative paths in a config given as text or a dict are relative to
    (default: the working directory; compress gives `out`, where its config is kept).
    `max_minutes`: the run's time budget on this machine, over `[pipeline] max_minutes`.

    `out` is written whole or not at all: the outputs are staged beside it and swapped in
    once complete (an earlier run's outputs there are replaced as a whole). InputError, before
    any work, when `out` is inside the data or the cache, or is a non-empty folder that is not
    an earlier edgekiln output (unless `force`: the outputs then go beside its files).
    SIGTERM/SIGINT raise `Interrupted` after the manifest records where the run stopped."""
    from edgekiln.engine import outputs
    from edgekiln.engine.runner import run_pipeline
    from edgekiln.system.interrupts import Interrupted, raising

    cfg, text, name = config_of(config, base)
    if max_minutes is not None:
        cfg.pipeline.max_minutes = max_minutes
    check_files(cfg)
    out_dir = outputs.through_link(Path(out) if out is not None else Path("out") / name)
    cache = _cache_dir(cache_dir)
    config_path = None if isinstance(config, dict) or _is_text(config) else Path(config)
    config_inside = config_path is not None and config_path.resolve() == (out_dir / outputs.KEPT_CONFIG).resolve()
    if config_inside:
        config_path, keep_config = None, True  # re-running a kept config: the new output keeps it too
    outputs.recover(out_dir)
    outputs.refuse_unsafe(out_dir, cache, outputs.input_paths(cfg, config_path))
    if compare is not None:
        read_run(Path(compare))  # a bad base stops the run before any work
    started = time.perf_counter()
    staging = None
    try:
        with raising(), outputs.staged(out_dir, force, config_inside) as staging:
            if keep_config:
                write_text(staging.path / outputs.KEPT_CONFIG, text)
            try:
                outcome = run_pipeline(cfg, staging.path, cache, text, shown_as=out_dir)
            except BaseException as e:
                if isinstance(e, Interrupted) and outputs.is_edgekiln_output(out_dir):
                    staging.abandon()  # a re-run cut short: the previous run stays whole, not a failed one
                    e.kept_previous = out_dir
                elif junit is not None and (staging.path / "manifest.json").is_file():
                    with _output("junit", junit):
                        _write_run_junit(Path(junit), json.loads((staging.path / "manifest.json").read_text()),
                                         name, time.perf_counter() - started)
                raise
            written, failures, passed, manifest, record = _finish(staging, out_dir, outcome, compare, name)
            if junit is not None:
                with _output("junit", junit):
                    _write_run_junit(Path(junit), manifest, name, time.perf_counter() - started)
    except BaseException as e:
        # Where the manifest that records the error is: None when nothing was published.
        e.manifest_path = out_dir / "manifest.json" if staging is not None and staging.published else None
        raise
    paths = {"manifest": out_dir / "manifest.json", "splits": out_dir / "splits.json"}
    paths.update({k: out_dir / p.name for k, p in written.items()})
    artifacts = list(outcome.artifacts)
    paths.update({f"artifact:{a.target}": out_dir / a.path for a in artifacts})
    return RunResult(passed=passed, out_dir=out_dir, manifest=manifest, record=record, gates=list(outcome.gates),
                     unchecked=outcome.unchecked,
                     artifacts=artifacts, error=outcome.error, paths=paths, report_failures=failures,
                     published=staging.published)


def _finish(staging, out_dir: Path, outcome, compare, name: str):
    """The staged run's reports, and its manifest with any that failed: (paths written,
    failures, whether the run passed, the manifest, its RunRecord)."""
    manifest = json.loads((staging.path / "manifest.json").read_text())
    try:
        record = run_record(manifest)
    except InputError as e:  # the run's own manifest: a bug in edgekiln, not the user's input
        record, written = None, {}
        failures = [ReportFailure(report, staging.path / report, RuntimeError(f"its manifest does not fit its "
                                                                              f"schema: {e}"))
                    for report in ("report.png and tradeoff.png", "MODEL_CARD.md", "report.html")]
    else:
        written, failures = _write_reports(staging.path, record, compare, name)
    for f in failures:  # named as the user will find them
        f.path = out_dir / f.path.relative_to(staging.path)
    passed = outcome.passed
    if failures:
        # A report the disk refused leaves the run not whole (passed: false); a bug in the
        # report step leaves the run standing, its manifest saying what is missing.
        passed = passed and all(f.bug for f in failures)
        manifest = _record_report_failures(staging.path, manifest, failures, staging)
        if record is not None:
            record = run_record(manifest)
    return written, failures, passed, manifest, record


@contextlib.contextmanager
def _output(what: str, path: str | Path):
    """Writing a file the caller asked for: a path that cannot be written is bad input
    (InputError naming it, exit 2), not an internal error."""
    try:
        yield
    except OSError as e:
        raise InputError(f"{what} file {path}: cannot write it: {e.strerror or e}") from e


def _write_run_junit(path: Path, manifest: dict, name: str, seconds: float) -> Path:
    from edgekiln.release.junit import Case, run_cases, write_junit

    try:
        cases = run_cases(run_record(manifest))
    except InputError as e:  # the run's own manifest: a bug in edgekiln, said as one (never bad input)
        cases = [Case("edgekiln.run", "run", "error", f"a bug in edgekiln: the run's manifest does not fit its "
                                                      f"schema: {e}")]
    return write_junit(path, f"edgekiln run {name}", cases, seconds)


def report(out_dir: str | Path, compare: str | Path | None = None, title: str | None = None) -> dict[str, Path]:
    """(Re)write a finished run's report.png, tradeoff.png, MODEL_CARD.md and report.html
    from its manifest; `compare`: show the deltas against this base release. ReportError
    when some could not be written (after writing the others)."""
    out_dir = Path(out_dir)
    record, _ = read_run(out_dir)
    paths, failures = _write_reports(out_dir, record, compare, title or out_dir.name)
    if failures:
        raise ReportError(failures, paths)
    return paths


def _write_reports(out_dir: Path, record, compare: str | Path | None,
                   title: str) -> tuple[dict[str, Path], list[ReportFailure]]:
    """Each report of the run (`record`: its RunRecord) written on its own: one that fails is
    recorded and the others are still written (report.html without its plots if they failed)."""
    from edgekiln.release import plots
    from edgekiln.release.html_report import write_html
    from edgekiln.release.model_card import write_model_card

    comparison = None if compare is None else diff_runs(Path(compare), out_dir)  # bad input: raised
    paths: dict[str, Path] = {}
    failures: list[ReportFailure] = []
    images: dict[str, Path] = {}

    def attempt(name: str, path: Path, write) -> None:
        try:
            write()
        except Exception as e:  # noqa: BLE001 - recorded, shown and turned into the exit code by the caller
            failures.append(ReportFailure(name, path, e))

    def draw() -> None:
        images.update(plots.draw(record, out_dir))
        paths.update(report_png=images["report"], tradeoff_png=images["tradeoff"])

    attempt("report.png and tradeoff.png", out_dir / "report.png", draw)
    attempt("MODEL_CARD.md", out_dir / "MODEL_CARD.md",
            lambda: paths.update(model_card=write_model_card(record, out_dir / "MODEL_CARD.md")))
    attempt("report.html", out_dir / "report.html",
            lambda: paths.update(report_html=write_html(out_dir / "report.html", record, images, comparison, title)))
    return paths, failures


def _record_report_failures(out_dir: Path, manifest: dict, failures: list[ReportFailure], staging) -> dict:
    """The manifest with the reports that could not be written under `report_errors`,
    rewritten atomically. A report the disk refused makes the run not whole: the manifest
    then says `passed: false` with the error, and when even that cannot be written, nothing
    of the run is published (`staging` abandoned) rather than a manifest claiming a pass."""
    from edgekiln.engine.manifest import write_manifest

    refused = [f for f in failures if not f.bug]
    recorded = {**manifest, "report_errors": {f.name: f.message() for f in failures}}
    if refused:
        recorded.update(passed=False, verdict="FAILED", error=f"reports not written: {refused[0].message()}")
    try:
        write_manifest(out_dir, recorded)
    except OSError:  # the caller reports the failures; the manifest on disk is still the run's, whole
        if refused:
            staging.abandon()
    return recorded


def check(out_dir: str | Path, *, profiles: tuple[str, ...] | list[str] = (), accuracy: bool = True,
          allow_estimate: bool = False, junit: str | Path | None = None) -> CheckResult:
    """Re-verify a finished run: every artifact's sha256 against the manifest, its accuracy
    re-measured in its runtime (unless `accuracy=False`), its latency and memory re-measured
    on its profile (or one of `profiles`, by format) against its budgets."""
    from edgekiln.release.junit import check_cases, write_junit
    from edgekiln.release.verify import check_run

    out_dir = Path(out_dir)
    started = time.perf_counter()
    record, checks = check_run(out_dir, measure_accuracy=accuracy, profiles=tuple(profiles),
                               allow_estimate=allow_estimate)
    run_passed = bool(record.passed)
    require_checked = bool((record.config.release or {}).get("require_checked"))
    unchecked = any(c.budgets_not_checked for c in checks)
    result = CheckResult(passed=run_passed and all(c.passed for c in checks) and not (require_checked and unchecked),
                         out_dir=out_dir, record=record, checks=checks, run_passed=run_passed,
                         require_checked=require_checked)
    if junit is not None:
        with _output("junit", junit):
            result.paths["junit"] = write_junit(Path(junit), f"edgekiln check {out_dir}",
                                                check_cases(checks, run_passed, require_checked),
                                                time.perf_counter() - started)
    return result


def diff(base: str | Path, new: str | Path, *, max_accuracy_drop: float | None = None,
         max_latency_increase: float | None = None, max_size_increase: float | None = None,
         json_out: str | Path | None = None, junit: str | Path | None = None,
         html: str | Path | None = None) -> RunDiff:
    """Compare the run `new` with the release `base` (each an output folder or manifest.json).
    Thresholds not given come from the new run's `[release]` section. `json_out`, `junit`,
    `html`: also write the comparison as JSON, JUnit XML, and the new run's report.html with
    the deltas."""
    from edgekiln.release.junit import diff_cases, write_junit

    started = time.perf_counter()
    result = diff_runs(Path(base), Path(new), max_accuracy_drop=max_accuracy_drop,
                       max_latency_increase=max_latency_increase, max_size_increase=max_size_increase)
    if json_out is not None:
        with _output("json", json_out):
            write_text(Path(json_out), json.dumps(result.to_dict(), indent=2))
    if junit is not None:
        with _output("junit", junit):
            write_junit(Path(junit), f"edgekiln diff {base} {new}", diff_cases(result), time.perf_counter() - started)
    if html is not None:
        with _output("html", html):
            _diff_html(Path(html), result)
    return result


def _diff_html(path: Path, comparison: RunDiff) -> Path:
    """The new run's report.html with the deltas, its plots drawn afresh from its manifest
    (a manifest.json given alone has no PNGs beside it)."""
    from edgekiln.release import plots
    from edgekiln.release.html_report import write_html

    record, _ = read_run(Path(comparison.new))
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        return write_html(path, record, plots.draw(record, Path(tmp)), comparison, Path(comparison.new).parent.name)


@dataclass
class Validation:
    """What `validate` checked: the config (files and profiles included), and what only the
    run can check (it needs torch)."""

    config: PipelineConfig
    deferred: tuple[str, ...]

    @property
    def plan(self):
        """The stages it runs, and why the others do not."""
        from edgekiln.engine.config import plan_of

        return plan_of(self.config)


def plan(config: str | Path, max_minutes: float | None = None):
    """What `run` would do with `config` and how long it should take on this machine: every
    planned stage's loops and conversions, each architecture timed by a short probe
    (engine/planning.py). Trains nothing, writes nothing. `max_minutes`: as `run`'s."""
    from edgekiln.engine.planning import plan_run

    cfg, _, _ = config_of(config)
    if max_minutes is not None:
        cfg.pipeline.max_minutes = max_minutes
    check_files(cfg)
    return plan_run(cfg)


def validate(config: str | Path) -> Validation:
    """Check a config without running it: keys, types, ranges, files, profiles, formats and
    encodings, without importing torch. ConfigError naming every problem."""
    from edgekiln.engine.config import DEFERRED_CHECKS

    cfg = load_config(Path(config))
    check_files(cfg)
    return Validation(cfg, DEFERRED_CHECKS)


def bench(artifact: str | Path, profile: str, *, allow_estimate: bool = False, runner: str | None = None,
          json_out: str | Path | None = None):
    """Measure one artifact on a latency profile (host, a device over adb/ssh, or an estimate)
    against its budgets; its sha256 against a manifest.json beside it. Returns the check
    (verify.ArtifactCheck); `json_out`: also write it as JSON."""
    from edgekiln.release.verify import bench_artifact

    result = bench_artifact(Path(artifact), profile, allow_estimate=allow_estimate, runner=runner)
    if json_out is not None:
        with _output("json", json_out):
            write_text(Path(json_out), json.dumps({"artifact": str(artifact), **result.to_dict()}, indent=2))
    return result


@dataclass
class Calibration:
    """What `calibrate_profile` wrote: the new profile and its table, the rows measured, and
    the reference artifacts the converter refused."""

    profile: object  # targets.profiles.Profile, loaded from `path`
    path: Path
    table: Path
    rows: list
    refused: list


def calibrate_profile(profile: str, runner: str, out: str | Path | None = None, *,
                      models: list[tuple[str, int]] | None = None, encodings: list[str] | None = None,
                      runs: int | None = None, on_plan=None, on_row=None) -> Calibration:
    """Time reference models on `profile`'s device through `runner` (host, adb or ssh), write
    their table and a profile that estimates from it (`out`, default ./PROFILE-calibrated.toml).
    Resumable: rows already in the table are not measured again. `on_plan(total, done, table)`
    and `on_row(job, row, refused)` report progress. InputError for a bad profile, runner or
    --out, or a device that cannot be reached (the rows measured so far are kept)."""
    from edgekiln.targets import device_calibration, get_format
    from edgekiln.targets.errors import DeviceUnreachable, RunnerFailed, RuntimeUnavailable
    from edgekiln.targets.profiles import ProfileError, load_profile

    try:
        if runner not in ("host", "adb", "ssh"):
            raise InputError(f"--runner {runner!r}: use host, adb or ssh (a profile is calibrated by measuring)")
        source = load_profile(profile)
        out = Path(out or f"{source.name}-calibrated.toml")
        if out.suffix != ".toml":
            raise InputError(f"--out {out}: the new profile's file name must end in .toml")
        table = out.with_name(f"{out.stem}.references.csv")
        if runner == "host" and (why := get_format(source.format).runtime_unavailable()) is not None:
            raise InputError(f"the host runner cannot time {source.format} here: {why}")
        spec = {"kind": runner, **({"runs": runs} if runs else {})}
        measuring = source.model_copy(update={"runner": source.runner.model_copy(update=spec)})
        todo = device_calibration.jobs(measuring, models, encodings or None)
        left = device_calibration.pending(todo, device_calibration.read_rows(table))
        if on_plan is not None:
            on_plan(len(todo), len(todo) - len(left), table)
        rows, refused = device_calibration.calibrate(measuring, table, left, on_row or (lambda *_: None))
        device_calibration.write_profile(source, runner, out, table, rows)
        return Calibration(load_profile(out.resolve()), out, table, rows, refused)
    except (ProfileError, ValueError, DeviceUnreachable, RuntimeUnavailable, RunnerFailed) as e:
        raise InputError(str(e)) from e
    except OSError as e:  # --out's folder cannot be written: bad input, and the rows so far are kept
        raise InputError(f"cannot write {e.filename or out}: {e.strerror or e}") from e


def cache_entries(cache_dir: str | Path | None = None) -> list:
    """The stage cache's entries (engine.cache.CacheEntry), oldest first."""
    from edgekiln.engine.cache import StageCache

    return StageCache(_cache_dir(cache_dir)).entries()


def cache_verify(cache_dir: str | Path | None = None, *, discard: bool = False) -> tuple[list, list[tuple]]:
    """Every entry's files against the sizes and sha256 recorded when it was written: (the
    entries, [(entry, problem)] of the damaged ones, deleted when `discard`)."""
    from edgekiln.engine.cache import StageCache, require_cache, verify_entry

    cache_dir = _cache_dir(cache_dir)
    require_cache(cache_dir)
    cache = StageCache(cache_dir)
    entries = cache.entries()
    damaged = [(e, problem) for e in entries if (problem := verify_entry(e.path)) is not None]
    if discard:
        for e, problem in damaged:
            cache.discard(e.path, problem)
    return entries, damaged


def cache_gc(cache_dir: str | Path | None = None, *, older_than_s: float | None = None,
             max_bytes: int | None = None) -> list:
    """Delete the entries unused for `older_than_s`, then the least recently used until the
    cache is at most `max_bytes`; returns the entries removed."""
    from edgekiln.engine.cache import StageCache, require_cache

    cache_dir = _cache_dir(cache_dir)
    require_cache(cache_dir)
    return StageCache(cache_dir).gc(older_than_s, max_bytes)
