"""Grading on the held-out test split, after a stage has decided everything on val.

A stage never receives the test images: the runner hands them to the stage result's
grader once the stage has returned, and stores what it measured with the result. A stage
with models is graded by their (averaged) logits; a stage can set its own grader (the
quantize stage grades its INT8 simulation, the export stage each artifact in its runtime).
"""

from __future__ import annotations

from typing import Callable

import torch

from edgekiln.stages import training
from edgekiln.stages.modeling import ModelBundle

# (test images uint8 NCHW, test labels) -> {"test_accuracy": percent, "test_top1": [class per image]}
Grader = Callable[[torch.Tensor, torch.Tensor], dict]


def top1_record(predicted_logits, labels) -> dict:
    """Test accuracy and the per-image top-1 (kept for paired intervals between stages)."""
    top1 = torch.as_tensor(predicted_logits).argmax(1)
    return {"test_accuracy": training.accuracy(predicted_logits, labels), "test_top1": top1.tolist()}


def models_grader(bundles: list[ModelBundle]) -> Grader:
    """Grades the averaged logits of `bundles` (one model, or a teacher ensemble)."""
    def grade(test_x: torch.Tensor, test_y: torch.Tensor) -> dict:
        return top1_record(torch.stack([training.logits(b, test_x) for b in bundles]).mean(0), test_y)
    return grade
