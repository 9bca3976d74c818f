"""`edgekiln diff`: a run against the last release, target by target.

Every figure is shown with its change; only comparable figures gate. Accuracy is comparable
when both runs graded on the same images (the same splits.json) in the same way (both in the
runtime, or both on the proxy). Latency and peak memory are comparable when both come from
the same source (host, device or estimate) on the same profile and the same device (for the
host runner: the same CPU). Size always is: it is the file's bytes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgekiln.engine.manifest import read_run
from edgekiln.errors import InputError
from edgekiln.release.lineage import lineage

# The thresholds, by the `[release]` key that sets each and the flag that overrides it.
THRESHOLD_FLAGS = {"max_accuracy_drop": "--max-accuracy-drop", "max_latency_increase": "--max-latency-increase",
                   "max_size_increase": "--max-size-increase"}


@dataclass
class Change:
    """One figure of one target (or of the run) in the base and the new run."""

    metric: str
    base: object
    new: object
    unit: str = ""
    delta: float | None = None  # new - base
    pct: float | None = None  # delta as a percentage of base
    comparable: bool = True
    why_not_comparable: str | None = None
    gated: bool = False  # a threshold applies to this figure (it gates when comparable)
    threshold: float | None = None
    threshold_key: str | None = None  # where that threshold was set
    regressed: bool = False
    note: str | None = None
    paired: dict | None = None  # test accuracy, both runs' predictions at hand: the exact paired drop

    def message(self, target: str | None = None) -> str:
        """One line: the change, and whether and why it gates."""
        subject = f"{target}: " if target else ""
        if self.delta is None:
            change = f"{self.base} -> {self.new}"
        else:
            unit = f" {self.unit}" if self.unit else ""
            pct = "" if self.pct is None else f", {self.pct:+.1f}%"
            change = f"{format_figure(self.base)} -> {format_figure(self.new)}{unit} ({format_figure(self.delta, signed=True)}{unit}{pct})"
        if self.paired is not None:
            low, high = self.paired["interval"]
            change += (f" [paired over {self.paired['images']} images: drop 95% interval {low:+.2f} to {high:+.2f}, "
                       f"McNemar p = {self.paired['mcnemar_p']:.2g}]")
        if self.regressed:
            return f"REGRESSION {subject}{self.metric} {change}: over {self.threshold_key} = {self.threshold:g}"
        if not self.comparable:
            return f"{subject}{self.metric} {change} (not compared: {self.why_not_comparable})"
        if self.gated:
            return f"{subject}{self.metric} {change}: within {self.threshold_key} = {self.threshold:g}"
        return f"{subject}{self.metric} {change}"


def format_figure(value, signed: bool = False) -> str:
    """A figure as the diff prints it: thousands separated, 4 significant digits below."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        sign = "+" if signed else ""
        return f"{value:{sign},.0f}" if abs(value) >= 1000 else f"{value:{sign}.4g}"
    return str(value)


@dataclass
class TargetDiff:
    target: str
    status: str  # "compared" | "added" | "removed" | "incomplete" (a record without its figures)
    format: str | None = None
    changes: list[Change] = field(default_factory=list)
    why: str | None = None  # "incomplete": which record lacks which figures

    @property
    def regressions(self) -> list[Change]:
        return [c for c in self.changes if c.regressed]


@dataclass
class RunDiff:
    """The comparison `edgekiln diff` prints, writes as JSON and gates on."""

    base: str
    new: str
    thresholds: dict[str, float | None]
    threshold_keys: dict[str, str]
    targets: list[TargetDiff] = field(default_factory=list)
    lineage: list[Change] = field(default_factory=list)  # teacher, student, edgekiln and tool versions
    notes: list[str] = field(default_factory=list)
    new_run_passed: bool | None = None

    @property
    def regressions(self) -> list[tuple[str, Change]]:
        return [(t.target, c) for t in self.targets for c in t.regressions]

    @property
    def incomplete(self) -> list[TargetDiff]:
        """Targets whose record in either run lacks the figures a release is judged on."""
        return [t for t in self.targets if t.status == "incomplete"]

    @property
    def passed(self) -> bool:
        """No regression, and every target's figures were there to judge."""
        return not self.regressions and not self.incomplete

    def to_dict(self) -> dict:
        out = asdict(self)
        out["passed"] = self.passed
        out["regressions"] = [c.message(t) for t, c in self.regressions]
        out["incomplete"] = [f"{t.target}: {t.why}" for t in self.incomplete]
        return out


def read_predictions(run, manifest_path: Path) -> dict | None:
    """The run's predictions.json (labels and each artifact's top-1 on test) when its manifest
    lists one and it lies beside it (None otherwise: a manifest alone is a valid base);
    InputError when the file there is not the one the run wrote."""
    from edgekiln.system.files import sha256

    record = run.predictions
    if record is None or not record.file or not record.sha256:
        return None  # no record, or one that cannot be checked: compared unpaired
    path = manifest_path.parent / record.file
    if not path.is_file():
        return None
    if sha256(path) != record.sha256:
        raise InputError(f"{path}: sha256 differs from {manifest_path}: not the predictions that run wrote")
    try:
        predictions = json.loads(path.read_text())
    except (ValueError, RecursionError) as e:
        raise InputError(f"{path} is not valid JSON: {e}") from None
    _check_predictions(predictions, path, run.splits.test if run.splits else None)
    return predictions


def _check_predictions(predictions, path: Path, test_count: int | None) -> None:
    """InputError unless `predictions` is labels (ints) and, per target, one top-1 class per
    label (and as many labels as the manifest's test split has images)."""
    def ints(value) -> bool:
        return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)

    if not isinstance(predictions, dict) or not ints(predictions.get("labels")) or \
            not isinstance(predictions.get("top1"), dict):
        raise InputError(f"{path}: not an edgekiln predictions file (labels: a list of class indexes, top1: per "
                         "target a list of class indexes)")
    labels = len(predictions["labels"])
    if test_count is not None and labels != test_count:
        raise InputError(f"{path}: {labels} labels, but the manifest's test split has {test_count} images")
    for target, top1 in predictions["top1"].items():
        if not ints(top1) or len(top1) != labels:
            found = f"{len(top1)} predictions" if isinstance(top1, list) else type(top1).__name__
            raise InputError(f"{path}: top1.{target} has {found} for {labels} labels")


def thresholds_for(new, overrides: dict[str, float | None]) -> tuple[dict, dict]:
    """The limits that gate: each flag given, else the new run's `[release]` section, else
    the section's defaults. Returns (values, where each was set)."""
    from pydantic import ValidationError

    from edgekiln.engine.config import ReleaseConfig

    section = {k: v for k, v in (new.config.release or {}).items() if v is not None}
    try:
        release = ReleaseConfig.model_validate(section)
    except ValidationError as e:
        problems = "; ".join(f"release.{'.'.join(map(str, err['loc']))} = {err.get('input')!r}: {err['msg']}"
                             for err in e.errors())
        raise InputError(f"the new run's manifest records release thresholds (config.release) that are not valid: "
                         f"{problems}") from None
    values, keys = {}, {}
    for key, flag in THRESHOLD_FLAGS.items():
        if overrides.get(key) is not None:
            values[key], keys[key] = overrides[key], flag
        else:
            values[key] = getattr(release, key)
            keys[key] = f"release.{key}" + ("" if section and key in section else " (default)")
    return values, keys


def diff_runs(base: Path, new: Path, **overrides: float | None) -> RunDiff:
    """Compare the run at `new` with the one at `base` (folders or manifest.json paths).
    `overrides`: max_accuracy_drop, max_latency_increase, max_size_increase."""
    unknown = set(overrides) - set(THRESHOLD_FLAGS)
    if unknown:
        raise TypeError(f"unknown thresholds: {', '.join(sorted(unknown))}")
    base_run, base_path = read_run(base)
    new_run, new_path = read_run(new)
    thresholds, keys = thresholds_for(new_run, overrides)
    result = RunDiff(base=str(base_path), new=str(new_path), thresholds=thresholds, threshold_keys=keys,
                     new_run_passed=new_run.passed)
    same_split, split_note = _same_split(base_run.splits, new_run.splits)
    if split_note:
        result.notes.append(split_note)
    if new_run.passed is False:
        result.notes.append("the new run itself did not pass its gates (manifest: passed false"
                            + (f"; error: {new_run.error}" if new_run.error else "") + ")")
    predictions = (read_predictions(base_run, base_path), read_predictions(new_run, new_path))
    if same_split and None in predictions:
        missing = " and ".join(f"{side} ({path.parent})" for side, path, found in (
            ("base", base_path, predictions[0]), ("new", new_path, predictions[1])) if found is None)
        result.notes.append(f"no predictions.json beside the manifest of {missing}: test accuracy compared as two "
                            "accuracies, not image by image (fetch predictions.json with the manifest)")
    if not same_split or None in predictions or predictions[0]["labels"] != predictions[1]["labels"]:
        predictions = None
    base_artifacts = {a.target: a for a in base_run.artifacts}
    new_artifacts = {a.target: a for a in new_run.artifacts}
    for name, record in new_artifacts.items():
        if name not in base_artifacts:
            result.targets.append(TargetDiff(name, "added", record.format))
            result.notes.append(f"target {name} is new in this run (no base to compare with)")
            continue
        lacking = _lacking(base_artifacts[name], "base") + _lacking(record, "new")
        if lacking:
            result.targets.append(TargetDiff(name, "incomplete", record.format, why="; ".join(lacking)))
            continue
        target = _target_diff(name, base_artifacts[name], record, same_split, thresholds, keys)
        students = (student_of(base_artifacts[name], base_run), student_of(record, new_run))
        if students[0] != students[1]:  # a student per group of targets: this target's changed
            target.changes.append(Change("student", *students))
        if predictions is not None:
            _pair(target, name, *predictions)
        result.targets.append(target)
    for name, record in base_artifacts.items():
        if name not in new_artifacts:
            result.targets.append(TargetDiff(name, "removed", record.format))
            result.notes.append(f"target {name} was in the base run and is not in this one")
    result.lineage = _lineage(base_run, new_run)
    return result


def _lacking(record, side: str) -> list[str]:
    """What a published artifact record always has and this one does not: its size, and an
    accuracy (val or test). A record cut down to its name is not comparable, never passed."""
    missing = ["size_bytes"] if record.size_bytes is None else []
    if record.accuracy is None and record.test_accuracy is None:
        missing.append("accuracy and test_accuracy")
    return [f"the {side} run's record has no {', '.join(missing)}"] if missing else []


def _same_split(b, n) -> tuple[bool, str | None]:
    """Whether two runs' splits records (None: none) graded on the same images, and the note."""
    if b is None or n is None or not b.sha256 or not n.sha256:
        return False, "a run has no splits.json record: accuracy is shown but not compared"
    if b.sha256 != n.sha256:
        return False, ("the runs graded on different images (splits.json sha256 differs: other data, seed or "
                       "fractions): accuracy is shown but not compared")
    if b.data_fingerprint and n.data_fingerprint and b.data_fingerprint != n.data_fingerprint:
        return False, ("the images changed (the data fingerprint differs, the split members do not): accuracy is "
                       "shown but not compared")
    if n.test:
        return True, (f"accuracy compared on the same {n.test} test images (one image = {100 / n.test:.2f} "
                      "points); each side's 95% interval is in the JSON")
    return True, "no test split in either run: accuracy compared on val, which the runs' decisions looked at"


def _pct(base: float | None, new: float | None) -> float | None:
    if base in (None, 0) or new is None:
        return None
    return 100.0 * (new - base) / base


def _numeric(metric: str, base, new, unit: str) -> Change:
    delta = None if base is None or new is None else new - base
    return Change(metric, base, new, unit, delta, _pct(base, new))


def student_of(artifact, run) -> str | None:
    """The student an artifact was built from: its own (a student per group of targets), else
    the run's one student (None when the run distilled none)."""
    if artifact.student is not None:
        return artifact.student.name
    return run.student.name if run.student else None


def _target_diff(name: str, base, new, same_split: bool, thresholds: dict, keys: dict) -> TargetDiff:
    out = TargetDiff(name, "compared", new.format)
    changes = out.changes
    if base.format != new.format:
        changes.append(Change("format", base.format, new.format, comparable=False,
                              why_not_comparable="a different format"))
    # Accuracy: the release figure (test) gates; val is shown (the runs' decisions looked at it).
    on_test = new.test_accuracy is not None and base.test_accuracy is not None
    for split, key in (("test", "test_accuracy"), ("val", "accuracy")):
        if getattr(base, key) is None and getattr(new, key) is None:
            continue
        change = _numeric(f"{split} accuracy", getattr(base, key), getattr(new, key), "points")
        change.pct = None
        sources = (getattr(base, f"{key}_source") or base.accuracy_source,
                   getattr(new, f"{key}_source") or new.accuracy_source)
        if not same_split:
            change.comparable, change.why_not_comparable = False, "different test/val images"
        elif sources[0] != sources[1]:
            change.comparable, change.why_not_comparable = False, f"measured {sources[0]} vs {sources[1]}"
        elif change.delta is None:
            change.comparable, change.why_not_comparable = False, "missing on one side"
        if split == ("test" if on_test else "val"):
            _gate(change, None if change.delta is None else -change.delta, thresholds["max_accuracy_drop"],
                  keys["max_accuracy_drop"])
        if split == "test":
            change.note = f"95% intervals: base {base.test_accuracy_ci}, new {new.test_accuracy_ci}"
        changes.append(change)
    # Latency and peak memory: comparable only from the same source on the same device.
    comparable, why = _same_measurement(base, new)
    for percentile in ("p50", "p90"):
        b, n = (None if a.latency_ms is None else getattr(a.latency_ms, percentile) for a in (base, new))
        if b is None and n is None:
            continue
        change = _numeric(f"{percentile} latency", b, n, "ms")
        change.note = f"base {base.latency_source} on {base.profile}, new {new.latency_source} on {new.profile}"
        if not comparable or change.delta is None:
            change.comparable = False
            change.why_not_comparable = why if not comparable else "measured on one side only"
        _gate(change, change.pct, thresholds["max_latency_increase"], keys["max_latency_increase"])
        changes.append(change)
    if base.peak_memory_mb is not None or new.peak_memory_mb is not None:
        change = _numeric("peak memory", base.peak_memory_mb, new.peak_memory_mb, "MB")
        if not comparable or change.delta is None:
            change.comparable = False
            change.why_not_comparable = why if not comparable else "measured on one side only"
        changes.append(change)
    size = _numeric("size", base.size_bytes, new.size_bytes, "bytes")
    _gate(size, size.pct, thresholds["max_size_increase"], keys["max_size_increase"])
    changes.append(size)
    for key, metric in (("encoding", "encoding"), ("io", "io")):
        if getattr(base, key) != getattr(new, key):
            changes.append(Change(metric, getattr(base, key), getattr(new, key)))
    for key, metric in (("params", "params"), ("macs", "MACs")):
        b, n = base.cost_features.get(key), new.cost_features.get(key)
        if b is not None or n is not None:
            changes.append(_numeric(metric, b, n, ""))
    return out


def _pair(target: TargetDiff, name: str, base: dict, new: dict) -> None:
    """Attach the exact paired drop (McNemar) to the target's test accuracy change, from both
    runs' per-image predictions on the same test images."""
    from edgekiln.stats import hits, paired_drop

    change = next((c for c in target.changes if c.metric == "test accuracy" and c.comparable), None)
    if change is None or name not in base["top1"] or name not in new["top1"]:
        return
    drop = paired_drop(hits(base["top1"][name], base["labels"]), hits(new["top1"][name], new["labels"]))
    change.paired = drop.to_dict()


def _gate(change: Change, worse_by: float | None, threshold: float | None, key: str) -> None:
    """`threshold` applies to `change`: it regressed when comparable and worse by more."""
    change.gated, change.threshold, change.threshold_key = True, threshold, key
    change.regressed = change.comparable and worse_by is not None and worse_by > threshold + 1e-9


def _same_measurement(base, new) -> tuple[bool, str | None]:
    """Whether two artifacts' latency figures can be compared, and why not."""
    if base.latency_source != new.latency_source:
        return False, f"{base.latency_source or 'not measured'} vs {new.latency_source or 'not measured'}"
    if base.profile != new.profile:
        return False, f"different profiles ({base.profile} vs {new.profile})"
    if base.device != new.device:
        return False, f"different devices ({base.device} vs {new.device})"
    if base.threads != new.threads:
        return False, f"different thread counts ({base.threads} vs {new.threads})"
    return True, None


def _lineage(base, new) -> list[Change]:
    """What changed upstream of the artifacts (of two RunRecords): the models each stage chose
    (teacher, student), the stages, edgekiln and tool versions."""
    out = []
    base_models = {what: name for what, name, _ in lineage(base)}
    new_models = {what: name for what, name, _ in lineage(new)}
    pairs = [(what, base_models.get(what), new_models.get(what)) for what in dict.fromkeys([*base_models, *new_models])]
    stages = [" → ".join(run.plan.stages or ["every stage"]) for run in (base, new)]
    pairs += [("stages", *stages)]
    pairs += [("edgekiln", base.edgekiln_version, new.edgekiln_version),
             ("config sha256", base.config_sha256, new.config_sha256)]
    tools = sorted(set(base.tool_versions) | set(new.tool_versions))
    pairs += [(tool, base.tool_versions.get(tool), new.tool_versions.get(tool)) for tool in tools]
    for metric, b, n in pairs:
        if b != n:
            out.append(Change(metric, b, n))
    return out

