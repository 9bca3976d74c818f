"""What a stage plans to do before it does it, for `edgekiln run CONFIG --plan`: the training
loops it will run (architecture, epochs expected and at most) and the work that is not epochs
(conversions). A stage declares `plan="module:function"`, a function of the whole config
returning a list of `Work`; the engine (engine/planning.py) times each architecture and
adds it up. Torch-free."""

from __future__ import annotations

from dataclasses import dataclass

# An auto loop stops after `patience` epochs without gain: measured
# (BENCHMARKS.md, "A first run on your own images": three datasets), loops with patience 4 ran 4 to 25
# epochs, about 4 patience windows on average.
AUTO_WINDOWS = 4
# Seconds one conversion takes on this 2-core machine, as the runs' logs show it (the
# pre-check's "converts to onnx (1 s)", "coreml (6 s)", "tflite (14 s)" at 32 px; ExecuTorch
# 90-210 s an export, design.md): the artifact's grading in its runtime is included.
CONVERSION_SECONDS = {"onnx": 2.0, "coreml": 6.0, "tflite": 12.0, "executorch": 120.0}


@dataclass(frozen=True)
class Work:
    """One piece of a stage's work: a training loop of `arch` (epochs expected, at least, at
    most), or `seconds` of something that is not epochs (a conversion)."""

    what: str
    arch: str | None = None
    epochs: float = 0.0
    min_epochs: float = 0.0
    max_epochs: float = 0.0
    seconds: float = 0.0
    scale: float = 1.0  # the model's cost against `arch` (a pruned student: its MACs share)


def epochs_of(value, max_epochs: int, patience: int) -> tuple[float, float, float]:
    """(expected, least, most) epochs of a loop set to `value` (a number or "auto")."""
    if value != "auto":
        return float(value), float(value), float(value)
    return (float(min(max_epochs, AUTO_WINDOWS * patience)), float(min(max_epochs, patience + 1)),
            float(max_epochs))


def loop(what: str, arch: str, value, max_epochs: int, patience: int, scale: float = 1.0) -> Work:
    expected, least, most = epochs_of(value, max_epochs, patience)
    return Work(what, arch, expected, least, most, scale=scale)
