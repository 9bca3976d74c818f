"""Re-verify artifacts for a release build: `edgekiln check` (a whole run) and `edgekiln bench`
(one artifact). Artifacts must be the ones the manifest describes (sha256), still load in
their runtimes and reproduce the recorded accuracy, and meet their latency profile's budgets,
re-measured by the profile's runner (host, device or estimate)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edgekiln.data.dataset import DataConfig, load_dataset, to_input
from edgekiln.engine.manifest import read_run
from edgekiln.errors import InputError
from edgekiln.gates import BudgetCheck, budget_checks
from edgekiln.targets import evaluate
from edgekiln.targets import format as formats
from edgekiln.targets import get_format, runners
from edgekiln.targets.artifact import Artifact
from edgekiln.targets.cost import CostFeatures
from edgekiln.targets.errors import ConversionError, RuntimeUnavailable
from edgekiln.targets.evaluate import device_errors
from edgekiln.system.files import sha256, size_bytes
from edgekiln.targets.profiles import Profile, ProfileError, load_profile
from edgekiln.targets.target import TargetConfig, artifact_budgets

# Runtimes are deterministic on one machine; across machines (another CPU's kernels)
# a prediction may flip on a near-tie, so a re-measured accuracy may move this much.
ACCURACY_TOLERANCE = 0.5


@dataclass
class ArtifactCheck:
    target: str
    path: str
    profile: str | None = None
    sha256_matches: bool | None = None  # None: no manifest to compare with
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    accuracy: float | None = None  # val
    test_accuracy: float | None = None
    measurement: dict | None = None
    budgets: list[BudgetCheck] = field(default_factory=list)
    budgets_not_checked: list[str] = field(default_factory=list)  # each with the reason

    @property
    def passed(self) -> bool:
        return not self.problems and all(b.passed for b in self.budgets)

    @property
    def latency(self) -> dict:
        return (self.measurement or {}).get("latency_ms") or {}

    def to_dict(self) -> dict:
        """The check as `bench --json` writes it."""
        return {"profile": self.profile, "passed": self.passed, "measurement": self.measurement,
                "sha256_matches": self.sha256_matches, "problems": self.problems,
                "budgets": [b.to_dict() for b in self.budgets], "notes": self.notes,
                "budgets_not_checked": self.budgets_not_checked}


def format_of(path: Path) -> str:
    """The artifact format a file name implies (its suffix, as the formats declare them)."""
    try:
        return formats.format_of(path).NAME
    except KeyError as e:
        raise InputError(f"{path}: {e.args[0]}") from None


def _profile(name: str) -> Profile:
    try:
        return load_profile(name)
    except ProfileError as e:
        raise InputError(f"--profile: {e}") from None


def measure_against(result: ArtifactCheck, path: Path, profile: Profile, allow_estimate: bool,
                    target: TargetConfig | None = None) -> None:
    """Run `profile`'s runner on the artifact and check its budgets (latency, memory, size)."""
    fmt = get_format(format_of(path))
    if profile.format != fmt.NAME:
        raise InputError(f"profile {profile.name!r} is for {profile.format} artifacts; {path.name} is {fmt.NAME}")
    try:
        metadata = fmt.read_metadata(path)
    except Exception as e:  # protobuf / flatbuffer / spec parsers raise their own types
        raise InputError(f"{path} cannot be read as a {fmt.NAME} artifact: {str(e).splitlines()[0]}") from e
    features, other_layers = _estimate_inputs(path, metadata)
    precision = metadata.get("edgekiln_precision", fmt.PRECISION)
    try:
        with device_errors(result.target, profile, estimate_hint="pass --allow-estimate"):
            measurement = runners.measure(path, profile, features, precision, allow_estimate=allow_estimate,
                                          other_layers=other_layers)
    except RuntimeUnavailable as e:
        result.notes.append(f"latency not measured: {e}")
        measurement = None
    result.profile = profile.name
    measured = Artifact(target=result.target, format=fmt.NAME, file=path.name, precision=precision,
                        profile=profile.name, size_bytes=size_bytes(path), **artifact_budgets(target, profile))
    if measurement is not None:
        result.measurement = measurement.to_dict()
        result.notes += measurement.notes
        measured.update(dict(latency_ms=measurement.latency_ms, peak_memory_mb=measurement.peak_memory_mb,
                             latency_source=measurement.source, latency_detail=measurement.extra))
    result.budgets, not_checked = budget_checks(f"target {result.target}", measured)
    result.budgets_not_checked = [n.message() for n in not_checked]


def _estimate_inputs(path: Path, metadata: dict[str, str]) -> tuple[CostFeatures | None, dict[str, int]]:
    """What export recorded in the artifact for an estimate of it: its cost features (None
    when absent: not an edgekiln artifact) and the layers it keeps at another precision."""
    key = "edgekiln_cost"
    try:
        features = CostFeatures.from_dict(json.loads(metadata[key])) if key in metadata else None
        key = "edgekiln_other_layers"
        other_layers = {str(kind): int(n) for kind, n in json.loads(metadata.get(key, "{}")).items()}
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise InputError(f"{path}: its metadata {key!r} is not what edgekiln writes ({type(e).__name__}: {e}); "
                         "re-export the artifact") from None
    return features, other_layers


def bench_artifact(path: Path, profile_name: str, allow_estimate: bool = False,
                   runner: str | None = None) -> ArtifactCheck:
    """`edgekiln bench`: one artifact against one profile; its sha256 is checked against a
    manifest.json beside it when there is one that lists it."""
    if not path.exists():
        raise InputError(f"artifact {path} does not exist")
    if not (path.is_file() or path.is_dir()):  # a FIFO or a device would block the read for ever
        raise InputError(f"artifact {path} is not a regular file (a pipe, socket or device): give the artifact file")
    result = ArtifactCheck(target=path.name, path=str(path))
    manifest_path = path.parent / "manifest.json"
    if manifest_path.is_file():
        records = {a.path: a for a in read_run(manifest_path)[0].artifacts}
        if path.name in records:
            result.target = records[path.name].target
            result.sha256_matches = sha256(path) == records[path.name].sha256
            if not result.sha256_matches:
                result.problems.append("sha256 differs from the manifest: not the artifact the run validated")
                return result  # not worth timing: it is not the artifact the manifest describes
    profile = _profile(profile_name)
    if runner is not None:
        from edgekiln.targets.profiles import RUNNERS

        if runner not in RUNNERS:
            raise InputError(f"--runner {runner!r}: use one of {', '.join(RUNNERS)}")
        profile = profile.model_copy(update={"runner": profile.runner.model_copy(update={"kind": runner})})
    measure_against(result, path, profile, allow_estimate)
    return result


def _inside_out(out_dir: Path, listed: str, key: str) -> None:
    """InputError unless the artifact path a manifest lists is a file name inside `out_dir`:
    a run writes its artifacts there, so an absolute path, a `..` or a link leaving the
    folder is not this run's artifact, and `check` reads nothing outside it."""
    relative = Path(listed)
    if relative.is_absolute() or ".." in relative.parts:
        raise InputError(f"{key} is {listed!r}, outside the output folder: a run lists its artifacts by their names "
                         f"in {out_dir}; nothing outside it is read")
    folder = Path(out_dir).resolve()
    if folder not in (folder / relative).resolve().parents:
        raise InputError(f"{key} {listed!r} leads outside {out_dir} (a link): nothing outside it is read")


def check_run(out_dir: Path, measure_accuracy: bool = True, profiles: tuple[str, ...] = (),
              allow_estimate: bool = False) -> tuple[Any, list[ArtifactCheck]]:
    """Check every artifact of the run in `out_dir` against its manifest and its profile; a
    profile given in `profiles` replaces the run's own for the artifacts of its format.
    Returns the run's RunRecord and a check per artifact."""
    run, manifest_path = read_run(out_dir)
    if not run.artifacts:
        raise InputError(f"{out_dir / 'manifest.json'} lists no artifacts (the run stopped before export)")
    for i, record in enumerate(run.artifacts):
        lacking = [k for k in ("path", "sha256") if not getattr(record, k)]
        if lacking:
            raise InputError(f"{manifest_path}: artifacts[{i}] ({record.target}) has no {' and no '.join(lacking)}: "
                             "nothing to check it against")
        _inside_out(out_dir, record.path, f"{manifest_path}: artifacts[{i}].path")
    pre = run.preprocessing
    if measure_accuracy and pre is None:
        raise InputError(f"{manifest_path} has no preprocessing record: the artifacts' inputs cannot be rebuilt")
    overrides: dict[str, Profile] = {}
    for name in profiles:
        profile = _profile(name)
        if not any(a.format == profile.format for a in run.artifacts):
            raise InputError(f"--profile {name}: the run has no {profile.format} artifact")
        overrides[profile.format] = profile
    splits = {}
    if measure_accuracy:
        try:
            data = load_dataset(DataConfig.model_validate(run.config.data.model_dump(exclude_unset=True)))
        except ValidationError as e:
            raise InputError(f"{manifest_path}: config.data is not a valid [data] section: "
                             f"{e.errors()[0]['msg']}") from None
        size = pre.image_size  # the model's input size, which may not be the data's (a given model's)
        splits["val"] = (to_input(data.val_x, pre.mean, pre.std, size).numpy(), data.val_y.numpy())
        if data.has_test:
            splits["test"] = (to_input(data.test_x, pre.mean, pre.std, size).numpy(), data.test_y.numpy())
    targets = {t.name: t.model_dump(exclude_unset=True) for t in run.config.targets}
    return run, [_check_artifact(out_dir, a, targets.get(a.target, {}), splits, overrides, allow_estimate)
                 for a in run.artifacts]


def _run_profile(record, target: dict) -> Profile:
    """The profile the run measured this artifact with: its own file, the target's overrides."""
    config = TargetConfig.model_validate(target)
    if record.profile_file:
        config.profile = record.profile_file
    try:
        return config.resolve()
    except ProfileError as e:
        raise InputError(f"target {record.target}: {e}") from None


def _check_artifact(out_dir: Path, artifact, target: dict, splits: dict, overrides: dict, allow_estimate: bool):
    """One artifact (its ArtifactRecord) against its file, its runtime and its profile;
    `target`: its [[targets]] entry as the run's config recorded it."""
    result = ArtifactCheck(artifact.target, artifact.path)
    path = out_dir / artifact.path
    if not path.exists():
        raise InputError(f"artifact {path} listed in the manifest does not exist")
    result.sha256_matches = sha256(path) == artifact.sha256
    if not result.sha256_matches:
        result.problems.append("sha256 differs from the manifest: not the artifact the run validated")
        return result
    if not artifact.passed:
        result.problems.append("its gate failed in the run")
    fmt = get_format(artifact.format)
    override = overrides.get(artifact.format)
    profile = override or _run_profile(artifact, target)
    for split, (x, y) in splits.items():  # val, and the held-out test split the release gates used
        recorded, source = ((artifact.accuracy, artifact.accuracy_source) if split == "val"
                            else (artifact.test_accuracy, artifact.test_accuracy_source or "runtime"))
        try:
            logits, _ = evaluate.runtime_logits(fmt, f"target {artifact.target}", profile, path, x)
            measured = evaluate.top1_accuracy(logits, y)
        except RuntimeUnavailable as e:
            result.notes.append(f"{split} accuracy not re-measured here: {e}")
            break
        setattr(result, "accuracy" if split == "val" else "test_accuracy", measured)
        if recorded is None:
            result.notes.append(f"the manifest has no {split} accuracy to compare with")
        elif source == "runtime" and abs(measured - recorded) > ACCURACY_TOLERANCE:
            result.problems.append(f"{split} accuracy {measured:.2f}% in {fmt.RUNTIME} differs from the "
                                   f"manifest's {recorded:.2f}%")
    try:
        size = int(json.loads(fmt.read_metadata(path)["preprocessing"])["image_size"])
        found = fmt.check(path, (1, 3, size, size), artifact.encoding)
        if found is not None:
            result.notes.append(f"{fmt.NAME} structure checked: {json.dumps(found)}")
    except ConversionError as structural:
        result.problems.append(str(structural))
    measure_against(result, path, profile, allow_estimate or target.get("allow_estimate", False),
                    None if override or not target else TargetConfig.model_validate(target))
    return result
