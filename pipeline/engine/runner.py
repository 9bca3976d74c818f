"""Runs the staged DAG: cache look-ups, stage runs, gates, artifact publishing, manifest."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgekiln import progress
from edgekiln import stages as registry
from edgekiln import time_budget
from edgekiln.calibration import folder_fingerprint
from edgekiln.data.dataset import Dataset, load_dataset
from edgekiln.engine import stage_code
from edgekiln.engine.cache import StageCache, stage_key
from edgekiln.engine.config import PipelineConfig, plan_of
from edgekiln.engine.manifest import build_manifest, publish_artifact, write_json, write_manifest
from edgekiln.stats import accuracy_interval, hits, images_to_resolve, paired_drop, smallest_resolvable_drop
from edgekiln.errors import InputError, TrainingDiverged
from edgekiln.gates import BudgetCheck, GateCheck, NotChecked, budget_checks, checks
from edgekiln.progress import console
from edgekiln.stages import Check, Plan, Stage
from edgekiln.stages.result import StageResult, load_result, save_result
from edgekiln.system import disk
from edgekiln.targets.artifact import Artifact
from edgekiln.system.files import content_digest, sha256
from edgekiln.system.interrupts import Interrupted
from edgekiln.training import evaluation, state, teacher_outputs

# The teachers' outputs on the training images, shared by the loops that distil from them
# (training/teacher_outputs.py): beside the stage entries, under the cache root.
TEACHER_OUTPUTS = ".teacher-outputs"


@dataclass
class StageRecord:
    name: str
    accuracy: float
    drop: float | None  # points below the previous stage
    budget: float | None  # that stage's own max_drop, if set
    passed: bool
    cached: bool
    seconds: float  # wall time in this run (a cached stage only loads)
    compute_seconds: float  # wall time when the stage was computed
    params: int | None
    macs: int | None
    key: str
    # On the held-out test split (None without one): accuracy, its 95% interval, and the
    # paired drop against the teacher on the same images with its interval.
    test_accuracy: float | None = None
    test_accuracy_ci: list[float] | None = None
    test_drop: float | None = None
    drop_ci: list[float] | None = None
    branch: str | None = None  # after a fork: the student of the branch this stage ran in


@dataclass
class Branch:
    """A chain of stages under way: its config (after a fork, the targets of its student),
    its results and cache keys so far, its last stage's record, and the student naming it
    (None before a fork). The first branch of a fork is the primary: the manifest's stage
    sections show its stages."""

    cfg: PipelineConfig
    results: dict[str, StageResult]
    keys: dict[str, str]
    last: StageRecord | None = None
    name: str | None = None
    primary: bool = True
    why: list | None = None  # why its student was chosen for its targets


@dataclass
class RunOutcome:
    stages: list[StageRecord] = field(default_factory=list)
    gates: list[GateCheck | BudgetCheck] = field(default_factory=list)
    results: dict[str, StageResult] = field(default_factory=dict)
    artifacts: list[Artifact] = field(default_factory=list)  # published, typed until the manifest
    labels: list[str] = field(default_factory=list)
    error: str | None = None
    checks: dict[str, dict] = field(default_factory=dict)  # the graph's pre-stage checks' records
    splits: dict | None = None  # what splits.json lists, and which split the release gates used
    predictions: dict | None = None  # predictions.json: each artifact's top-1 on the test split
    cache: object | None = None  # the StageCache: the manifest lists entries it discarded
    interrupted: dict | None = None  # the signal that stopped the run, and the stage under way
    plan: Plan | None = None  # the stages this config runs (the first is the reference)
    require_checked: bool = False  # [release] require_checked: an unchecked budget fails the run
    not_checked: list[NotChecked] = field(default_factory=list)  # the budgets in `unchecked`, as records
    # A student per group of targets: each branch's student, targets, why, and its stages'
    # results (the primary's are also in `results`); empty when one student serves every target.
    branches: list[Branch] = field(default_factory=list)
    time_budget: dict | None = None  # [pipeline] max_minutes: the plan's shares and what the budget cut

    @property
    def unchecked(self) -> list[str]:
        """Every budget of a published artifact that could not be checked, and why."""
        return [f"target {a.target}: {line}" for a in self.artifacts for line in a.budgets_not_checked]

    @property
    def passed(self) -> bool:
        return (self.error is None and all(g.passed for g in self.gates) and registry.publisher().name in self.results
                and not (self.require_checked and self.unchecked))


def _fingerprint(value):
    """Config values as they enter a cache key: a file path is its content's hash, so
    replacing a checkpoint in place re-runs the stages that read it; a folder, the hashes of
    every image in it. Not where they are: the same files in a fresh checkout (another
    folder, new times) find the same keys."""
    if isinstance(value, dict):
        return {k: _fingerprint(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_fingerprint(v) for v in value]
    if isinstance(value, Path):
        if value.is_file():
            return {"name": value.name, "sha256": content_digest(value)}
        if value.is_dir():  # a folder of images (calibration): its listing
            listing = json.dumps(folder_fingerprint(value)).encode()
            return {"listing_sha256": hashlib.sha256(listing).hexdigest()}
        return str(value)
    return value


def _dump(section) -> object:
    """A section's value as it enters a cache key (a section may leave out what changes no
    stage's result: `cache_view`)."""
    if isinstance(section, list):
        return [_dump(s) for s in section]
    return section.cache_view() if hasattr(section, "cache_view") else section.model_dump()


def check_writable(path: Path, option: str) -> None:
    """Create `path` if need be and create, write, rename and delete a probe file in it, so an
    unwritable output or cache stops the run before any work (InputError naming the path)."""
    probe = path / f".edgekiln-probe-{os.getpid()}"
    created = [p for p in [path, *path.parents] if not p.exists()]  # what the probe makes, deepest first
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"probe")
        os.replace(probe, probe.with_suffix(".renamed"))
        probe.with_suffix(".renamed").unlink()
    except OSError as e:
        raise InputError(f"{option} {path}: not writable: {e.strerror or e}") from None
    finally:  # leave no trace: a run refused later (a bad config) must not leave folders behind
        for folder in created:
            with contextlib.suppress(OSError):
                folder.rmdir()


def preflight(cfg: PipelineConfig) -> None:
    """Every planned stage's cheap checks of its own config (unknown architectures, missing
    files); InputError with every stage's problem, not only the first stage's."""
    problems = []
    for stage in plan_of(cfg).stages:
        if stage.preflight is not None:
            try:
                registry.resolve(stage.preflight)(stage.sections_of(cfg))
            except InputError as e:
                problems.append(str(e))
    if len(problems) == 1:
        raise InputError(problems[0])
    if problems:
        raise InputError(f"{len(problems)} problems, found before any work:\n" + "\n".join(f"  {p}" for p in problems))


def _run_stage(node: Stage, cfg: PipelineConfig, data: Dataset, cache: StageCache, key: str,
               results: dict[str, StageResult], run: Plan) -> tuple[StageResult, bool]:
    """The stage's result from the cache, or computed: the stage sees train and val only;
    its result is then graded on the test split, and stored with those figures."""
    entry = cache.lookup(node.name, key)
    if entry is not None:
        return _named(load_result(entry, node.reporting.figures), node), True
    with cache.locked(node.name, key, on_wait=lambda: console.print(
            f"  {node.name}: another run is computing this stage; waiting to re-use its result")):
        entry = cache.lookup(node.name, key)  # the run we waited for finished it
        if entry is not None:
            return _named(load_result(entry, node.reporting.figures), node), True
        started = time.perf_counter()
        config = node.sections_of(cfg)
        checkpoints = cache.partial(node.name, key)
        with cache.writing(node.name, key) as workdir:
            try:
                with state.checkpointing(checkpoints), teacher_outputs.storing(cache.root / TEACHER_OUTPUTS), \
                        time_budget.stage(node.name) as cuts:
                    inputs = {role: results[name] for role, name in registry.inputs_of(node, run).items()}
                    result = node.function(data.for_stages(), config, workdir, **inputs)
            except TrainingDiverged:
                shutil.rmtree(checkpoints, ignore_errors=True)  # poisoned: never resume from them
                raise
            result.time_budget_cut = list(cuts)  # kept with the result: a cached stage still says it
            if data.has_test:
                grader = result.grader or evaluation.models_grader(result.bundles)
                with progress.status(f"  {node.name}: grading on the {len(data.test_y)} test images"):
                    result.tests = grader(data.test_x, data.test_y)
            result.compute_seconds = time.perf_counter() - started
            save_result(result, workdir)
        shutil.rmtree(checkpoints, ignore_errors=True)  # the stage is complete
    result.directory = cache.entry(node.name, key)
    return _named(result, node), False


def _named(result: StageResult, node: Stage) -> StageResult:
    result.stage = node.name  # the next stage measures its drop against it by this name
    return result


def _test_figures(top1: list[int] | None, teacher_top1: list[int] | None, labels) -> dict:
    """A model's test accuracy interval and its paired drop against the teacher."""
    if top1 is None or labels is None:
        return {}
    correct = hits(top1, labels)
    out = {"test_accuracy_ci": accuracy_interval(correct)}
    if teacher_top1 is not None:
        drop = paired_drop(hits(teacher_top1, labels), correct)
        out.update(test_drop=drop.drop, drop_ci=[drop.low, drop.high], drop_test=drop.to_dict())
    return out


def stage_code_of(node: Stage, cfg: PipelineConfig) -> str:
    """The version of the code `node` runs under `cfg`: its module's closure, with the
    artifact formats it declares it uses (all, where it declares none)."""
    formats = None
    if node.formats is not None:
        formats = tuple(sorted(node.formats(node.sections_of(cfg))))
    return stage_code.code_version(node.module, formats)


def stage_key_of(node: Stage, cfg: PipelineConfig, code: str, data_fingerprint: str, keys: dict[str, str],
                 run: Plan) -> str:
    """The cache key of `node` under `cfg`: every input its result depends on (its config
    sections, the content of the profiles they name, the data, its inputs' keys, the code)."""
    unkeyed = node.unkeyed(node.sections_of(cfg)) if node.unkeyed else set()
    sections = {s: _fingerprint(_dump(getattr(cfg, s))) for s in node.sections if s not in unkeyed}
    if node.profiles is not None:  # the content of every profile its sections name, not just the name
        for name, profiles in node.profiles(node.sections_of(cfg)).items():
            sections[name] = ([_profile_content(p) for p in profiles] if isinstance(profiles, list)
                              else _profile_content(profiles))
    if node.trains and cfg.pipeline.max_minutes is not None:  # the budget may cut its loops
        sections["pipeline.max_minutes"] = cfg.pipeline.max_minutes
    inputs = [keys[name] for name in registry.inputs_of(node, run).values()]
    return stage_key(node.name, code, sections, [data_fingerprint] + inputs)


def _profile_content(profile) -> dict:
    """What a profile contributes to a cache key: its content (budgets, runner, runtime
    options, estimate settings) and that of its reference table, never just its name."""
    entry = profile.model_dump(mode="json", exclude={"path"})
    if profile.estimate is not None:
        entry["references_sha256"] = sha256(profile.references_path())
    return entry


def _run_check(check: Check, cfg: PipelineConfig, data: Dataset, cache: StageCache, code: str) -> dict:
    """Run one of the graph's pre-stage checks (cached like a stage) and apply the config
    sections it narrows. Returns its record for the manifest."""
    console.rule(f"[bold]{check.name}")
    key = stage_key(check.name, code, _fingerprint(check.key_inputs(cfg)), [data.fingerprint])
    with cache.locked(check.name, key):
        entry = cache.lookup(check.name, key)
        if entry is not None:
            stored = json.loads((entry / f"{check.name}.json").read_text())
            console.print(f"  {check.name}: cached")
            record, narrowed = stored["record"], stored["narrowed"]
            cached = True
        else:
            record, narrowed = check(data, cfg)
            with cache.writing(check.name, key) as workdir:
                (workdir / f"{check.name}.json").write_text(json.dumps({"record": record, "narrowed": narrowed}))
            cached = False
    # Only the keys a check changed: the rest of the section is the config in force, which
    # may differ from the one the cached record was written under.
    for section, changes in narrowed.items():
        setattr(cfg, section, getattr(cfg, section).model_copy(update=changes))
    return {"cached": cached, **check.refreshed(record, cfg)}


def _gate(node: Stage, result: StageResult, branch: Branch, outcome: RunOutcome, data: Dataset) -> list[GateCheck]:
    """Stage gates decide on val (what the stages decided on). Artifacts are the release:
    their accuracy gates are judged on the held-out test split where there is one."""
    if not node.budgeted:
        return []
    cfg = branch.cfg
    reference = outcome.plan.reference
    teacher = branch.results[reference.name]
    previous = branch.last
    budget = getattr(cfg.budget.max_drop, node.name)
    common = dict(stage_budget=budget, stage_budget_key=f"budget.max_drop.{node.name}",
                  max_drop_total=cfg.budget.max_drop_total, reference_name=reference.label)
    if not node.publishes:
        subject = f"stage {node.name}" + (f" ({branch.name})" if branch.name else "")
        return checks(subject, result.accuracy, previous=(previous.name, previous.accuracy),
                      teacher=teacher.accuracy, **common)
    on_test = data.has_test and teacher.test is not None
    quantized = branch.results[previous.name]
    gates = []
    for artifact in result.artifacts:
        subject = f"target {artifact.target}"
        if on_test:
            # The artifact's test interval and paired drop against the teacher, once: the
            # gate reads them, and the manifest publishes them with the record.
            artifact.update(_test_figures(artifact.test_top1, teacher.test.top1, data.test_y))
            against_previous = paired_drop(hits(quantized.test.top1, data.test_y),
                                           hits(artifact.test_top1, data.test_y))
            artifact_gates = checks(subject, artifact.test_accuracy,
                                    previous=(previous.name, quantized.test.accuracy),
                                    teacher=teacher.test.accuracy, split="test",
                                    intervals={reference.label: tuple(artifact.drop_ci),
                                               previous.name: (against_previous.low, against_previous.high)},
                                    rule=cfg.budget.gate, **common)
        else:
            artifact_gates = checks(subject, artifact.accuracy, previous=(previous.name, previous.accuracy),
                                    teacher=teacher.accuracy, **common)
        resource_gates, not_checked = budget_checks(subject, artifact)
        artifact.budgets_not_checked = [n.message() for n in not_checked]
        outcome.not_checked += not_checked
        artifact_gates += resource_gates
        artifact.gates = [g.to_dict() for g in artifact_gates]
        artifact.passed = all(g.passed for g in artifact_gates)
        gates += artifact_gates
    return gates


def _publish(result: StageResult, out_dir: Path, cache: StageCache) -> list[Artifact]:
    """Copy the artifacts into `out_dir`, each checked against the sha256 recorded when the
    export stage wrote it (they already carry their gates' test figures)."""
    return [publish_artifact(result.directory / a.file, out_dir, a,
                             expected_sha256=cache.recorded_sha256(result.directory, a.file))
            for a in result.artifacts]


def _write_splits(out_dir: Path, data: Dataset) -> dict:
    """splits.json: the members of val and test, so anyone can re-evaluate the artifacts on
    exactly the same images; the manifest records its sha256 and which split graded."""
    path = write_json(out_dir, "splits.json", data.splits)
    return {"file": path.name, "sha256": sha256(path), "data_fingerprint": data.fingerprint,
            "train": data.splits["train_count"],
            "val": data.splits["val"]["count"],
            "test": None if data.splits["test"] is None else data.splits["test"]["count"],
            "decisions_on": "val", "release_gates_on": "test" if data.has_test else "val",
            # the smallest drop, in points, each split tells from none (6 images of it)
            "smallest_resolvable_drop": {"val": round(smallest_resolvable_drop(len(data.val_y)), 2),
                                         "test": None if not data.has_test
                                         else round(smallest_resolvable_drop(len(data.test_y)), 2)},
            **({"skipped": {"count": len(data.skipped), "why": "hidden (the name starts with '.')",
                            "entries": data.skipped[:20]}} if data.skipped else {}),
            **({} if data.has_test else {"note": "no test split (data.test_fraction = 0, or no data.test_shards): "
                                                 "the release gates are judged on val, which every decision "
                                                 "looked at"})}


def _write_predictions(out_dir: Path, artifacts: list[Artifact], data: Dataset) -> dict | None:
    """predictions.json: every artifact's top-1 class on each test image (with the labels), so
    `edgekiln diff` can compare two releases image by image (a paired test) instead of as two
    unrelated accuracies. None without a test split."""
    if not data.has_test:
        (out_dir / "predictions.json").unlink(missing_ok=True)  # a previous run's, on other images
        return None
    top1 = {a.target: [int(c) for c in a.test_top1] for a in artifacts if a.test_top1 is not None}
    path = write_json(out_dir, "predictions.json", {"split": "test", "labels": [int(y) for y in data.test_y],
                                                    "top1": top1})
    return {"file": path.name, "sha256": sha256(path), "split": "test", "targets": sorted(top1)}


class _Chain:
    """Runs the plan's stages in order, gating and recording each, and publishing the
    artifacts. A stage whose result holds `branches` (the student search per target) forks
    the chain: the rest of the plan runs once per branch, with the config's targets narrowed
    to the branch's, each stage cached under a key of its own branch."""

    def __init__(self, data: Dataset, cache: StageCache, outcome: RunOutcome, out_dir: Path):
        self.data, self.cache, self.outcome, self.out_dir = data, cache, outcome, out_dir
        self.current: str | None = None  # the stage under way

    def run(self, start: int, branch: Branch) -> bool:
        """Run the plan's stages from `start` on `branch`; False once a gate fails (the run stops)."""
        run = self.outcome.plan
        for position in range(start, len(run.stages)):
            node = run.stages[position]
            self.current = node.name if branch.name is None else f"{node.name} ({branch.name})"
            key = branch.keys[node.name] = stage_key_of(node, branch.cfg, stage_code_of(node, branch.cfg),
                                                        self.data.fingerprint, branch.keys, run)
            console.rule(f"[bold]{self.current}")
            started = time.perf_counter()
            result, cached = _run_stage(node, branch.cfg, self.data, self.cache, key, branch.results, run)
            if node.refresh is not None:  # a cached result keeps its model, not another config's verdicts
                registry.resolve(node.refresh)(result, node.sections_of(branch.cfg),
                                               branch.results[run.reference.name].accuracy)
            forks = result.forks
            if len(forks) < 2 or branch.name is not None:
                if not self._finish(node, result, cached, started, key, branch):
                    return False
                continue
            branch.results[node.name] = result  # the search's record, with every branch's student
            names = ", ".join(f"{f.student} for {', '.join(f.targets)}" for f in forks)
            console.print(f"  {node.name}: a student per group of targets: {names}", markup=False)
            for i, fork in enumerate(forks):
                targets = set(fork.targets)
                sub = Branch(branch.cfg.model_copy(update={"targets": [t for t in branch.cfg.targets
                                                                       if t.name in targets]}),
                             dict(branch.results), dict(branch.keys), branch.last, fork.student, i == 0, fork.why)
                sub.keys[node.name] = hashlib.sha256(f"{key}:{fork.student}".encode()).hexdigest()[:24]
                self.outcome.branches.append(sub)
                if not self._finish(node, result.part(i), cached, started, sub.keys[node.name], sub):
                    return False
                if not self.run(position + 1, sub):
                    return False
            return True
        return True

    def _finish(self, node: Stage, result: StageResult, cached: bool, started: float, key: str,
                branch: Branch) -> bool:
        """Gate and record `node`'s result on `branch`, publish its artifacts; False when a gate failed."""
        outcome, data = self.outcome, self.data
        branch.results[node.name] = result
        if branch.primary:  # the manifest's stage sections show the primary branch
            outcome.results.setdefault(node.name, result)
        gates = _gate(node, result, branch, outcome, data)
        outcome.gates += gates
        previous = branch.last
        reference = outcome.plan.reference.name
        branch.last = record = StageRecord(
            name=node.name, accuracy=result.accuracy,
            drop=None if previous is None else previous.accuracy - result.accuracy,
            budget=getattr(branch.cfg.budget.max_drop, node.name, None) if node.budgeted else None,
            passed=all(g.passed for g in gates), cached=cached,
            seconds=time.perf_counter() - started,
            compute_seconds=result.compute_seconds, params=result.params, macs=result.macs, key=key,
            test_accuracy=None if result.test is None else result.test.accuracy, branch=branch.name,
            **{k: v for k, v in _test_figures(None if result.test is None else result.test.top1,
                                              _top1(branch.results[reference]), data.test_y).items()
               if k != "drop_test"})
        outcome.stages.append(record)
        test_note = "" if result.test is None else f", test {result.test.accuracy:.2f}%"
        console.print(f"  {self.current}: val {result.accuracy:.2f}%{test_note}" + ("  (cached)" if cached else ""))
        for gate in gates:
            console.print(("  " if gate.passed else "  [bold red]") + gate.message())
        if node.publishes:
            published = _publish(result, self.out_dir, self.cache)
            for artifact in published:
                if branch.name is not None:
                    artifact.student = {"name": branch.name, "why": branch.why}
            outcome.artifacts += published
            outcome.predictions = _write_predictions(self.out_dir, outcome.artifacts, data)
        return record.passed


def _top1(result: StageResult) -> list[int] | None:
    """A result's per-image test predictions (None where it was not graded)."""
    return None if result.test is None else result.test.top1


def _warn_unresolvable(cfg: PipelineConfig, data: Dataset) -> None:
    """A warning for each split too small to tell a drop of the total budget from none: val
    decides (students, pruning steps, encodings), test gates the release; on a split of n
    images a drop under 6 / n points is noise (stats.smallest_resolvable_drop)."""
    budget = cfg.budget.max_drop_total
    if budget is None or budget <= 0:
        return
    splits = [("val", len(data.val_y), "decisions on val (the teacher, the student, each pruning step, the "
                                       "encoding) cannot tell a drop of the budget from noise", "data.val_fraction")]
    if data.has_test:
        splits.append(("test", len(data.test_y), "the release gates decide on the point value, not on a drop "
                                                 "they can resolve", "data.test_fraction"))
    for name, images, what, key in splits:
        smallest = smallest_resolvable_drop(images)
        if smallest > budget:
            console.print(f"[bold yellow]warning:[/] {name} has {images} images: the smallest drop they tell from "
                          f"none is {smallest:.2f} points, more than budget.max_drop_total = {budget:g}; {what}. "
                          f"About {images_to_resolve(budget)} {name} images would resolve it (more data, or a larger "
                          f"{key}), or loosen the budget to {smallest:.1f}")


def _start_time_budget(cfg: PipelineConfig, data: Dataset, started: float) -> None:
    """Plan the run on this machine and start `[pipeline] max_minutes` (edgekiln.time_budget:
    each stage's deadline is set as it starts); print what the plan expects of each stage."""
    from edgekiln.engine.planning import plan_run

    limit = cfg.pipeline.max_minutes
    console.print(f"time budget: {limit:g} min (pipeline.max_minutes); planning the run on this machine", markup=False)
    plan = plan_run(cfg, data)
    budget = time_budget.start(limit, plan.expected_by_stage(), started=started)
    expected, least, _ = plan.minutes
    shares = "; ".join(f"{name} {minutes:.1f}" for name, minutes in budget.expected.items())
    console.print(f"  expected {expected:.1f} min on this machine (minutes: {shares}); each stage gets its share "
                  "of what is left when it starts", markup=False)
    if least > limit:
        console.print(f"[bold yellow]warning:[/] even the least this run could take here ({least:.1f} min: every "
                      f"auto loop stopping after one patience window) is over pipeline.max_minutes = {limit:g}: "
                      "loops will be cut early and keep their best epoch; fewer candidates or smaller models fit "
                      "the budget better")
    elif expected > limit:
        console.print("  the plan expects more than the budget: auto loops stop at their stage's deadline, keeping "
                      "their best epoch", markup=False)


def _time_budget_record(outcome: RunOutcome) -> dict | None:
    """The manifest's `time_budget`: the shares, what was cut in each stage (this run's, or
    a cached stage's own record), the run's minutes and whether it kept within."""
    budget = time_budget.current()
    if budget is None:
        return None
    cut = {name: list(result.time_budget_cut) for name, result in outcome.results.items()}
    minutes = budget.elapsed_minutes
    return {"max_minutes": budget.max_minutes,
            "expected_minutes": {k: round(v, 2) for k, v in budget.expected.items()},
            "deadline_minute": {k: round((v - budget.started) / 60, 2) for k, v in budget.deadlines.items()},
            "cut": {k: v for k, v in cut.items() if v}, "minutes": round(minutes, 2),
            "within": minutes <= budget.max_minutes}


def run_pipeline(cfg: PipelineConfig, out_dir: Path, cache_dir: Path, config_text: str,
                 shown_as: Path | None = None) -> RunOutcome:
    """Run every stage (re-using cached ones), gate each, publish artifacts into `out_dir`,
    and write `out_dir/manifest.json`. Stops at the first failed gate. Raises InputError /
    ConversionError (after writing a manifest with the error) for bad input, and
    Interrupted (after writing one that says where) on SIGTERM/SIGINT. `shown_as`: the
    folder messages name when `out_dir` is its staging folder."""
    outcome = RunOutcome()
    run_started = time.monotonic()  # a time budget counts from here
    rename = None if shown_as is None else (out_dir, shown_as)
    check_writable(out_dir, "--out")
    check_writable(cache_dir, "--cache-dir")
    outcome.plan = run = plan_of(cfg)
    outcome.require_checked = cfg.release.require_checked
    preflight(cfg)
    data = load_dataset(cfg.data, index_dir=cache_dir / ".index")
    outcome.labels = data.classes
    test = f" / {len(data.test_y)} test" if data.has_test else " (no test split)"
    console.print(f"data: {len(data.train_y)} train / {len(data.val_y)} val{test} images, "
                  f"{data.num_classes} classes, {data.image_size} px")
    if data.skipped:
        shown = ", ".join(data.skipped[:3]) + (f" and {len(data.skipped) - 3} more" if len(data.skipped) > 3 else "")
        console.print(f"  skipped {len(data.skipped)} hidden file(s) or folder(s) (the name starts with '.'): {shown}",
                      markup=False)
    _warn_unresolvable(cfg, data)
    if cfg.pipeline.max_minutes is not None:
        _start_time_budget(cfg, data, run_started)
    cache = StageCache(cache_dir, warn=lambda message: console.print(f"[bold yellow]warning:[/] {message}"))
    outcome.cache = cache
    chain = _Chain(data, cache, outcome, out_dir)  # `current`: the stage under way, for the messages of a run that stops
    try:
        outcome.splits = _write_splits(out_dir, data)
        for check in run.checks():
            chain.current = check.name
            outcome.checks[check.name] = _run_check(check, cfg, data.for_stages(), cache,
                                                    stage_code.code_version(check.module))
        for name, why in run.skipped.items():
            if not registry.stage_named(name).starts:  # the other way in (teacher or your model) is no news
                console.print(f"  {name}: skipped ({why})", markup=False)
        chain.run(0, Branch(cfg, outcome.results, {}))
        chain.current = None
        outcome.time_budget = _time_budget_record(outcome)
    except Interrupted as e:
        current = chain.current
        outcome.error = "interrupted"
        outcome.interrupted = {"signal": e.signal, "stage": current}
        e.stage = current
        with contextlib.suppress(OSError):
            write_manifest(out_dir, build_manifest(cfg, config_text, outcome))
        raise
    except Exception as e:
        current = chain.current
        outcome.error = f"{type(e).__name__}: {e}"
        with contextlib.suppress(OSError):
            write_manifest(out_dir, build_manifest(cfg, config_text, outcome))
        full = disk.full_disk_error(e)
        if full is not None or isinstance(e, OSError):  # the disk failed us mid-run: bad input, not a bug
            error = full or e
            raise InputError(f"{current or 'the run'}: {disk.describe(error, out_dir, rename)} (the stages finished so far "
                             "stay cached: a re-run resumes after them)") from e
        folder = None if isinstance(e, (InputError, TrainingDiverged)) else disk.nearly_full((cache_dir, out_dir))
        if folder is not None:  # a library that reports a full disk in its own words
            shown = shown_as if folder == out_dir and shown_as is not None else folder
            raise InputError(f"{current or 'the run'}: {type(e).__name__}: {e}: the disk under {shown} is full "
                             f"({disk.human(disk.free_bytes(folder))} free); free some space and re-run (the stages "
                             "finished so far stay cached)") from e
        raise
    finally:
        time_budget.stop()
    try:
        write_manifest(out_dir, build_manifest(cfg, config_text, outcome))
    except OSError as e:
        raise InputError(f"{disk.describe(e, out_dir / 'manifest.json', rename)} (every stage is cached: a re-run with "
                         "room for the outputs is warm)") from e
    return outcome
