"""Stage `quantize`: INT8 post-training quantization, calibrated on a representative sample.

The stage picks the calibration sample (class-balanced, seeded) and scores the INT8
model simulated in torch (static activations, per-channel symmetric weights). The
export stage then builds each target's INT8 artifact from the same float model and the
same calibration sample, and measures it again in the target's own runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from edgekiln.calibration import balanced_sample
from edgekiln.stages import modeling, training
from edgekiln.stages.data import Dataset, to_input
from edgekiln.stages.result import StageResult
from edgekiln.targets.tflite_format import pt2e_int8

SCHEME = "int8: static per-tensor activations, per-channel symmetric weights"


class QuantizeConfig(BaseModel):
    """`[quantize]`: INT8 post-training quantization."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["ptq"] = "ptq"
    calibration_samples: int = Field(256, ge=1, le=100_000)


def calibration_images(data: Dataset, bundle: modeling.ModelBundle, indices: list[int]):
    """The calibration sample as preprocessed float32 NCHW numpy, for every backend."""
    return to_input(data.train_x[torch.as_tensor(indices)], bundle.mean, bundle.std).numpy()


def run(data: Dataset, config: dict, inputs: dict[str, StageResult], workdir: Path) -> StageResult:
    cfg: QuantizeConfig = config["quantize"]
    bundle = inputs["prune"].bundle
    indices = balanced_sample(data.train_y.numpy(), cfg.calibration_samples, data.seed).tolist()
    simulated = pt2e_int8(bundle.model, calibration_images(data, bundle, indices))
    with torch.no_grad():
        val = to_input(data.val_x, bundle.mean, bundle.std)
        predicted = torch.cat([simulated(val[i : i + 256]) for i in range(0, len(val), 256)])
    return StageResult.with_model(training.accuracy(predicted, data.val_y), bundle, metrics={
        "mode": cfg.mode, "scheme": SCHEME, "calibration_indices": indices,
        "params": modeling.params(bundle.model), "macs": inputs["prune"].metrics["macs"]})
