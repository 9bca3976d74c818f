"""What every stage returns, and how a result is stored in and read back from a directory."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from edgekiln.system.records import Record, dumped
from edgekiln.targets.artifact import Artifact
from edgekiln.training.evaluation import Grading
from edgekiln.training.modeling import ModelBundle, load_bundle, save_bundle

_MODEL_DIR = "model"
_RESULT_FILE = "result.json"


@dataclass
class Fork:
    """One branch of a stage that chose a model per group of targets (distill: a student per
    group): the runner goes on with each as a run of its own."""

    student: str
    targets: list[str]
    accuracy: float  # val, percent
    params: int
    macs: float
    why: list[dict] = field(default_factory=list)  # per group: its profile, targets and why this student


@dataclass
class StageResult:
    """A stage's outcome: its accuracy on the whole val split (percent), the size of its model,
    its own figures (`figures`: the record type its package declares, `StageReport.figures`,
    which its report hook turns into its manifest section), an optional model, and files
    (relative to the result's directory). The runner reads only the fields declared here."""

    accuracy: float
    figures: Record = field(default_factory=Record)
    files: list[str] = field(default_factory=list)
    params: int | None = None  # of the model it goes on with
    macs: float | None = None
    # A stage that chose a model per group of targets: one fork each (two or more).
    forks: list[Fork] = field(default_factory=list)
    # Set by the runner: the grading on the held-out test split (the stage's model first; after
    # a fork, one per fork), the seconds it computed for, what the time budget cut in it.
    tests: list[Grading] = field(default_factory=list)
    compute_seconds: float = 0.0
    time_budget_cut: list[str] = field(default_factory=list)
    # The artifacts it built (the stage that publishes), typed from export to the manifest:
    # graded, gated and published in place, serialized when stored and in the manifest.
    artifacts: list[Artifact] = field(default_factory=list)
    _models: list[ModelBundle] | None = None
    _model_dirs: list[Path] = field(default_factory=list)
    directory: Path | None = None  # set once stored
    stage: str | None = None  # the stage that produced it (set by the runner)
    # Set by a stage that grades itself on the test split in its own way (not stored); the
    # runner calls it after the stage returns. Default: the stage's models (grading.py).
    grader: Callable | None = None

    @property
    def test(self) -> Grading | None:
        """Its grading on the held-out test split (None: no test split, or not graded)."""
        return self.tests[0] if self.tests else None

    @property
    def bundle(self) -> ModelBundle:
        """The stage's (first) model, read from disk on first use (a cached run often never
        needs it)."""
        return self.bundles[0]

    @property
    def bundles(self) -> list[ModelBundle]:
        """All the stage's models (a teacher ensemble has several), best first."""
        if self._models is None:
            if not self._model_dirs:
                raise LookupError("this stage produced no model")
            self._models = [load_bundle(d) for d in self._model_dirs]
        return self._models

    def part(self, index: int) -> "StageResult":
        """The share of one fork (the `index`th) of a stage that chose a model per group of
        targets: that fork's model (loaded or not) and figures, its test grading where graded."""
        fork = self.forks[index]
        models = None if self._models is None else [self._models[index]]
        out = StageResult(accuracy=fork.accuracy, figures=self.figures.model_copy(update={"arch": fork.student}),
                          params=fork.params, macs=fork.macs, tests=self.tests[index:index + 1],
                          compute_seconds=self.compute_seconds, time_budget_cut=list(self.time_budget_cut),
                          _models=models, _model_dirs=self._model_dirs[index:index + 1], directory=self.directory)
        out.stage = self.stage
        return out

    @classmethod
    def with_model(cls, accuracy: float, bundle: ModelBundle, **kw) -> "StageResult":
        return cls(accuracy=accuracy, _models=[bundle], **kw)

    @classmethod
    def with_models(cls, accuracy: float, bundles: list[ModelBundle], **kw) -> "StageResult":
        return cls(accuracy=accuracy, _models=list(bundles), **kw)


def _model_dir(directory: Path, index: int) -> Path:
    return directory / (_MODEL_DIR if index == 0 else f"{_MODEL_DIR}_{index}")


def save_result(result: StageResult, directory: Path) -> None:
    """Store `result` in `directory` (which already holds its files); result.json is last."""
    models = result._models or []
    for i, bundle in enumerate(models):
        save_bundle(bundle, _model_dir(directory, i))
    # the figures as the stage set them: read back, they dump to the same manifest section
    record = {"accuracy": result.accuracy, "figures": dumped(result.figures), "files": result.files,
              "params": result.params, "macs": result.macs, "forks": [asdict(f) for f in result.forks],
              "tests": [asdict(t) for t in result.tests], "compute_seconds": result.compute_seconds,
              "time_budget_cut": result.time_budget_cut,
              "artifacts": [a.to_dict() for a in result.artifacts], "models": len(models)}
    (directory / _RESULT_FILE).write_text(json.dumps(record, indent=1))


def load_result(directory: Path, figures: type[Record] = Record) -> StageResult:
    """The result `save_result` stored in `directory`, its figures read as `figures` (the
    stage's record type)."""
    record = json.loads((directory / _RESULT_FILE).read_text())
    return StageResult(accuracy=record["accuracy"], figures=figures.model_validate(record["figures"]),
                       files=record["files"],
                       params=record["params"], macs=record["macs"], forks=[Fork(**f) for f in record["forks"]],
                       tests=[Grading(**t) for t in record["tests"]], compute_seconds=record["compute_seconds"],
                       time_budget_cut=record["time_budget_cut"],
                       artifacts=[Artifact.from_dict(a) for a in record.get("artifacts", [])],
                       _model_dirs=[_model_dir(directory, i) for i in range(record["models"])],
                       directory=directory)
