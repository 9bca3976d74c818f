"""What every stage returns, and how a result is stored in and read back from a directory."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from edgekiln.stages.modeling import ModelBundle, load_bundle, save_bundle

_MODEL_DIR = "model"
_RESULT_FILE = "result.json"


@dataclass
class StageResult:
    """A stage's outcome: its accuracy on the whole val split (percent), figures for the
    report, an optional model, and files (relative to the result's directory)."""

    accuracy: float
    metrics: dict = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    _model: ModelBundle | None = None
    _model_dir: Path | None = None
    directory: Path | None = None  # set once stored

    @property
    def bundle(self) -> ModelBundle:
        """The stage's model, read from disk on first use (a cached run often never needs it)."""
        if self._model is None:
            if self._model_dir is None:
                raise LookupError("this stage produced no model")
            self._model = load_bundle(self._model_dir)
        return self._model

    @classmethod
    def with_model(cls, accuracy: float, bundle: ModelBundle, **kw) -> "StageResult":
        return cls(accuracy=accuracy, _model=bundle, **kw)


def save_result(result: StageResult, directory: Path) -> None:
    """Store `result` in `directory` (which already holds its files); result.json is last."""
    has_model = result._model is not None
    if has_model:
        save_bundle(result._model, directory / _MODEL_DIR)
    record = {"accuracy": result.accuracy, "metrics": result.metrics, "files": result.files,
              "has_model": has_model}
    (directory / _RESULT_FILE).write_text(json.dumps(record, indent=1))


def load_result(directory: Path) -> StageResult:
    record = json.loads((directory / _RESULT_FILE).read_text())
    return StageResult(accuracy=record["accuracy"], metrics=record["metrics"], files=record["files"],
                       _model_dir=directory / _MODEL_DIR if record["has_model"] else None,
                       directory=directory)
