"""Evaluation: a model's logits and top-1 accuracy on a split, on the device training uses;
and grading on the held-out test split after a stage has decided everything on val.

A stage never receives the test images: the runner hands them to the stage result's grader
once the stage has returned, and stores what it measured with the result. A stage with
models is graded by their (averaged) logits; a stage can set its own grader (the quantize
stage grades its INT8 simulation, the export stage each artifact in its runtime)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from edgekiln.data.dataset import Dataset, to_input
from edgekiln.training import distributed
from edgekiln.training.modeling import ModelBundle

@dataclass
class Grading:
    """A model graded on the held-out test split: its top-1 accuracy (percent) and the class
    it chose for each image (kept for the paired intervals between stages and artifacts)."""

    accuracy: float
    top1: list[int]


# (test images uint8 NCHW, test labels) -> a Grading per model the stage goes on with: the
# stage's own first; a stage that forked (a student per group of targets), one per fork.
Grader = Callable[[torch.Tensor, torch.Tensor], list[Grading]]


def device() -> torch.device:
    """CUDA when there is a GPU (this rank's, under torchrun), else the CPU."""
    return distributed.device()


def model_input(bundle: ModelBundle, images: torch.Tensor) -> torch.Tensor:
    """Images (uint8, or float in [0, 1]) as `bundle`'s model expects them: its size, its
    normalization."""
    return to_input(images, bundle.mean, bundle.std, bundle.input_size)


def features_and_logits(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The last feature map (before pooling) and the logits, from one forward pass."""
    if hasattr(model, "features_and_logits"):  # models wrapped from other libraries
        return model.features_and_logits(x)
    features = model.forward_features(x)
    return features, model.forward_head(features)


@torch.no_grad()
def logits(bundle: ModelBundle, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Logits (on the CPU) of `bundle` for uint8 `images`, in eval mode."""
    dev = device()
    model = bundle.model.to(dev).eval()
    out = [model(model_input(bundle, images[i : i + batch_size].to(dev))).float().cpu()
           for i in range(0, len(images), batch_size)]
    bundle.model.cpu()
    return torch.cat(out)


def accuracy(predicted_logits, labels) -> float:
    """Top-1 accuracy in percent."""
    predicted = torch.as_tensor(predicted_logits).argmax(1)
    return float((predicted == torch.as_tensor(labels)).double().mean() * 100.0)


def evaluate(bundle: ModelBundle, data: Dataset) -> float:
    """Top-1 accuracy (percent) of `bundle` on the whole val split."""
    return accuracy(logits(bundle, data.val_x), data.val_y)


def grading(predicted_logits, labels) -> Grading:
    """Test accuracy and the per-image top-1 of `predicted_logits`."""
    return Grading(accuracy(predicted_logits, labels), torch.as_tensor(predicted_logits).argmax(1).tolist())


def branches_grader(bundles: list[ModelBundle]) -> Grader:
    """Grades each of `bundles` on its own (a student per group of targets), in order."""
    def grade(test_x: torch.Tensor, test_y: torch.Tensor) -> list[Grading]:
        return [grading(logits(b, test_x), test_y) for b in bundles]
    return grade


def models_grader(bundles: list[ModelBundle]) -> Grader:
    """Grades the averaged logits of `bundles` (one model, or a teacher ensemble) as one."""
    def grade(test_x: torch.Tensor, test_y: torch.Tensor) -> list[Grading]:
        return [grading(torch.stack([logits(b, test_x) for b in bundles]).mean(0), test_y)]
    return grade
