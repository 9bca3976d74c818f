"""What every stage returns, and how a result is stored in and read back from a directory."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from edgekiln.targets.artifact import Artifact
from edgekiln.training.modeling import ModelBundle, load_bundle, save_bundle

_MODEL_DIR = "model"
_RESULT_FILE = "result.json"


@dataclass
class StageResult:
    """A stage's outcome: its accuracy on the whole val split (percent), figures for the
    report, an optional model, and files (relative to the result's directory)."""

    accuracy: float
    metrics: dict = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
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

    def part(self, index: int, accuracy: float, metrics: dict) -> "StageResult":
        """A result holding only this one's `index`th model (loaded or not), with its own
        figures: one branch's share of a stage that chose a model per group of targets."""
        models = None if self._models is None else [self._models[index]]
        out = StageResult(accuracy=accuracy, metrics=metrics, _models=models,
                          _model_dirs=self._model_dirs[index:index + 1], directory=self.directory)
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
    record = {"accuracy": result.accuracy, "metrics": result.metrics, "files": result.files,
              "artifacts": [a.to_dict() for a in result.artifacts], "models": len(models)}
    (directory / _RESULT_FILE).write_text(json.dumps(record, indent=1))


def load_result(directory: Path) -> StageResult:
    record = json.loads((directory / _RESULT_FILE).read_text())
    return StageResult(accuracy=record["accuracy"], metrics=record["metrics"], files=record["files"],
                       artifacts=[Artifact.from_dict(a) for a in record.get("artifacts", [])],
                       _model_dirs=[_model_dir(directory, i) for i in range(record["models"])],
                       directory=directory)
