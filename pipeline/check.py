"""Re-verify a finished run for a release build: artifacts are the ones the manifest
describes (sha256), still load in their runtimes, and reproduce the recorded accuracy;
host latency is measured again."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekiln.stages.data import DataConfig, load_dataset, to_input
from edgekiln.stages.errors import InputError
from edgekiln.stages.training import accuracy
from edgekiln.targets import get_format
from edgekiln.targets.errors import ConversionError, RuntimeUnavailable
from edgekiln.targets.files import sha256

# Runtimes are deterministic on one machine; across machines (another CPU's kernels)
# a prediction may flip on a near-tie, so a re-measured accuracy may move this much.
ACCURACY_TOLERANCE = 0.5


@dataclass
class ArtifactCheck:
    target: str
    path: str
    sha256_matches: bool = True
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    accuracy: float | None = None
    latency_p50: float | None = None

    @property
    def passed(self) -> bool:
        return not self.problems


def read_manifest(out_dir: Path) -> dict:
    path = out_dir / "manifest.json"
    if not path.is_file():
        raise InputError(f"{path} does not exist: is {out_dir} the output of `edgekiln run`?")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{path} is not valid JSON: {e}") from None


def check_run(out_dir: Path, measure_accuracy: bool = True) -> tuple[dict, list[ArtifactCheck]]:
    """Check every artifact of the run in `out_dir` against its manifest."""
    manifest = read_manifest(out_dir)
    if not manifest.get("artifacts"):
        raise InputError(f"{out_dir / 'manifest.json'} lists no artifacts (the run stopped before export)")
    val = None
    if measure_accuracy:
        data = load_dataset(DataConfig.model_validate(manifest["config"]["data"]))
        pre = manifest["preprocessing"]
        val = (to_input(data.val_x, pre["mean"], pre["std"]).numpy(), data.val_y.numpy())
    targets = {t["name"]: t for t in manifest["config"]["targets"]}
    return manifest, [_check_artifact(out_dir, a, targets.get(a["target"], {}), val) for a in manifest["artifacts"]]


def _check_artifact(out_dir: Path, record: dict, target: dict, val) -> ArtifactCheck:
    result = ArtifactCheck(record["target"], record["path"])
    path = out_dir / record["path"]
    if not path.exists():
        raise InputError(f"artifact {path} listed in the manifest does not exist")
    if sha256(path) != record["sha256"]:
        result.sha256_matches = False
        result.problems.append("sha256 differs from the manifest: not the artifact the run validated")
        return result
    if not record.get("passed", False):
        result.problems.append("its gate failed in the run")
    fmt = get_format(record["format"])
    threads = record.get("threads", 1)
    size = _declared_image_size(fmt, path)
    try:
        if val is not None:
            result.accuracy = accuracy(fmt.predict(path, val[0], threads=threads), val[1])
            if record["accuracy_source"] == "runtime" and abs(result.accuracy - record["accuracy"]) > ACCURACY_TOLERANCE:
                result.problems.append(f"accuracy {result.accuracy:.2f}% in {fmt.RUNTIME} differs from the "
                                       f"manifest's {record['accuracy']:.2f}%")
        sample = val[0][0] if val is not None else np.zeros((3, size, size), dtype=np.float32)
        latency = fmt.benchmark(path, sample, threads, target.get("warmup_runs", 10), target.get("latency_runs", 100))
        result.latency_p50 = latency.p50
    except RuntimeUnavailable as e:
        result.notes.append(f"not run here: {e}")
        if record["format"] == "coreml":
            try:
                fmt.check(path, (1, 3, size, size))
                result.notes.append("structure checked: loads, input/output names and shape, INT8 weights")
            except ConversionError as structural:
                result.problems.append(str(structural))
    return result


def _declared_image_size(fmt, path: Path) -> int:
    """The input size the artifact's own embedded preprocessing metadata declares."""
    return int(json.loads(fmt.read_metadata(path)["preprocessing"])["image_size"])
