"""manifest.json, the contract release builds read, and atomic publishing of artifacts."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import time
import uuid
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from edgekiln import __version__
from edgekiln import stages as registry
from edgekiln.gates import verdict
from edgekiln.targets.artifact import Artifact
from edgekiln.system.disk import swap_into_place
from edgekiln.system.errors import InputError
from edgekiln.system.files import sha256, size_bytes

# manifest.json's layout (edgekiln/schemas/manifest.schema.json): raised when a field a reader
# relies on changes meaning. 2: typed gate records (kind, subject_type, subject, metric, unit,
# value, limit, status), budgets not checked among them.
SCHEMA_VERSION = 2

# The training stack; each format adds its own converters and runtime (Format.TOOLS).
TOOLS = {"torch": "torch", "torchvision": "torchvision", "timm": "timm", "torch_pruning": "torch-pruning",
         "torchao": "torchao"}


def tool_versions() -> dict[str, str | None]:
    from edgekiln.targets import format_names, get_format

    tools = dict(TOOLS)
    for name in format_names():
        tools.update(get_format(name).TOOLS)
    out = {}
    for key, dist in tools.items():
        try:
            out[key] = version(dist)
        except PackageNotFoundError:
            out[key] = None
    return out


def compute_device() -> dict:
    """Where this run's training and torch evaluation ran (stages taken from the cache may
    have run elsewhere: their records say `cached`)."""
    import torch

    from edgekiln.training import distributed
    from edgekiln.training.evaluation import device

    dev = device()
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine()
    rank, world_size = distributed.world()
    return {"device": dev.type, "name": name, "world_size": world_size,
            "backend": torch.distributed.get_backend() if world_size > 1 else None}


class PublishError(Exception):
    """An artifact copied out of the cache is not the one its stage wrote: nothing published."""


def publish_artifact(source: Path, out_dir: Path, artifact: Artifact, expected_sha256: str | None = None) -> Artifact:
    """Copy an artifact (file or directory) from the cache into `out_dir` atomically, and
    return it with path, sha256 and size measured on the published copy, which must equal
    `expected_sha256` (recorded when the stage wrote it) when given."""
    out_dir.mkdir(parents=True, exist_ok=True)
    dest = out_dir / source.name
    tmp = out_dir / f".{source.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        if source.is_dir():
            shutil.copytree(source, tmp)
        else:
            shutil.copyfile(source, tmp)
    except OSError as e:  # a full disk leaves no partial artifact behind, and names the artifact
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror, str(dest)) from e
    digest = sha256(tmp)
    if expected_sha256 is not None and digest != expected_sha256:
        shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
        raise PublishError(f"{source} changed after the export stage wrote it (sha256 {digest[:12]}..., recorded "
                           f"{expected_sha256[:12]}...): not published; re-run to rebuild it")
    swap_into_place(tmp, dest)
    artifact.path, artifact.sha256, artifact.size_bytes = dest.name, digest, size_bytes(dest)
    return artifact


def build_manifest(cfg, config_text: str, outcome) -> dict:
    """The run as release tooling sees it (accuracies in percent)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "edgekiln_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "passed": outcome.passed,
        "verdict": verdict(outcome.passed, len(outcome.unchecked)),
        # Budgets set but not checked ("target NAME: KEY = LIMIT not checked: why"); with
        # [release] require_checked they fail the run.
        "unchecked": outcome.unchecked,
        "error": outcome.error,
        "config": cfg.model_dump(mode="json"),
        "config_sha256": hashlib.sha256(config_text.encode()).hexdigest(),
        "tool_versions": tool_versions(),
        "compute": compute_device(),
        "plan": None if outcome.plan is None else outcome.plan.to_dict(),
        "time_budget": getattr(outcome, "time_budget", None),
        **stage_sections(outcome),
        "splits": outcome.splits,
        "predictions": outcome.predictions,
        "cache": {"discarded": [] if outcome.cache is None else outcome.cache.discarded},
        "stages": [vars(s) for s in outcome.stages],
        # A student per group of targets: which student each branch trained, for which targets and why.
        "branches": [branch_record(b, outcome) for b in getattr(outcome, "branches", [])],
        # Every gate judged, then every budget that could not be checked (status not_checked).
        "gates": [g.to_dict() for g in [*outcome.gates, *getattr(outcome, "not_checked", [])]],
        # Serialized here, once; per-image predictions stay in the cache, the manifest has the figures.
        "artifacts": [a.to_dict(published=True) for a in outcome.artifacts],
        "labels": outcome.labels,
        **({"interrupted": outcome.interrupted} if getattr(outcome, "interrupted", None) else {}),
    }


def branch_record(branch, outcome) -> dict:
    """One branch of a run that forked: its student, targets and why, the stages it ran, and
    those stages' manifest sections as in its own run (the primary's are also top-level)."""
    ran = [s.name for s in outcome.stages if s.branch == branch.name]
    sections = {}
    for stage in registry.registered():
        if stage.name in ran[1:] and stage.reporting.manifest is not None:
            sections.update(stage.reporting.manifest(branch.results.get(stage.name), outcome.checks))
    return {"student": branch.name, "targets": [t.name for t in branch.cfg.targets], "why": branch.why,
            "primary": branch.primary, "stages": ran, "sections": sections}


def stage_sections(outcome) -> dict:
    """What each stage adds to the manifest (its section, None when it did not run), then
    each pre-stage check's record under its name (None when its stage was not planned)."""
    out = {}
    for stage in registry.registered():
        report = stage.reporting
        if report.manifest is not None:
            out.update(report.manifest(outcome.results.get(stage.name), outcome.checks))
        out.update({check.name: outcome.checks.get(check.name) for check in stage.checks})
    return out


def _read_json(path: Path) -> tuple[dict, Path]:
    path = Path(path)
    manifest_path = path if path.suffix == ".json" and not path.is_dir() else path / "manifest.json"
    if not manifest_path.is_file():
        raise InputError(f"{manifest_path} does not exist (no manifest.json there): give an output folder of "
                         "`edgekiln run` or its manifest.json")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise InputError(f"{manifest_path} is not valid JSON: {e}") from None
    if not isinstance(manifest, dict) or "artifacts" not in manifest or "config" not in manifest:
        raise InputError(f"{manifest_path} is not an edgekiln manifest (no artifacts or config)")
    return manifest, manifest_path


def read_run(path: Path):
    """A finished run's RunRecord (engine/manifest_schema.py), from its output folder or its
    manifest.json, and the file's path; InputError when there is none, it is not an edgekiln
    manifest, or a field it holds has the wrong type (naming the field)."""
    from edgekiln.engine.manifest_schema import run_record

    manifest, manifest_path = _read_json(path)
    return run_record(manifest, manifest_path), manifest_path


def read_manifest(path: Path) -> tuple[dict, object, Path]:
    """manifest.json both as JSON and as its RunRecord (read_run's), and the file's path: for
    a caller that also hands the file's content on unchanged (`edgekiln.load`'s `manifest`)."""
    from edgekiln.engine.manifest_schema import run_record

    manifest, manifest_path = _read_json(path)
    return manifest, run_record(manifest, manifest_path), manifest_path


def write_text(path: Path, text: str) -> Path:
    """Write `path` atomically (temp file + rename): a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json(out_dir: Path, name: str, value) -> Path:
    """Write `out_dir/name` as JSON atomically (temp file + rename)."""
    return write_text(out_dir / name, json.dumps(value, indent=2))


def write_manifest(out_dir: Path, manifest: dict) -> Path:
    """Write `out_dir/manifest.json` atomically (temp file + rename). With
    EDGEKILN_CHECK_MANIFESTS=1 (the test suite sets it) every manifest is first validated
    against the shipped JSON Schema, so no test writes one the schema does not describe."""
    if os.environ.get("EDGEKILN_CHECK_MANIFESTS") == "1":
        check_against_json_schema(manifest)
    return write_json(out_dir, "manifest.json", manifest)


def check_against_json_schema(manifest: dict) -> None:
    """jsonschema.ValidationError when `manifest` does not fit edgekiln/schemas/manifest.schema.json."""
    import jsonschema

    from edgekiln.engine.manifest_schema import SCHEMA_FILE

    jsonschema.validate(json.loads(json.dumps(manifest)), json.loads(SCHEMA_FILE.read_text()))
