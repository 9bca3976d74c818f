"""Accuracy-aware quantization: when an INT8 artifact misses its accuracy budget, keep its
most quantization-sensitive layers in float, one at a time, until the budget holds or no
layer is left.

Sensitivity is measured in torch, once per model: each convolution or linear layer alone is
quantized (the PT2E INT8 scheme, calibrated on the calibration sample) and the mean squared
error of the logits against the float model's, on the same sample, is its score. Each
target then applies the ranking with its own backend.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import torch

from edgekiln.progress import LOG_EVERY_S, console, epoch_bar
from edgekiln.targets.int8 import Int8Options, quantizable_layers

SENSITIVITY = "logit MSE on the calibration sample with only this layer INT8 (torch PT2E simulation)"


def rank_layers(model: torch.nn.Module, calibration: np.ndarray, options: Int8Options, *, scheme) -> list[dict]:
    """Every quantizable layer with its sensitivity, most sensitive first."""
    model = model.cpu().eval()
    graph = scheme.export_dynamic_batch(model, torch.from_numpy(calibration[:1]).float())
    reference = scheme.predict(graph, calibration)
    layers = quantizable_layers(model)
    ranking = []
    with epoch_bar(every=LOG_EVERY_S) as bar:
        task = bar.add_task("layer sensitivity", total=len(layers), status="")
        for layer in layers:
            simulated = scheme.simulate(model, calibration, options, only=(layer,), graph=graph)
            error = float(np.mean((scheme.predict(simulated, calibration) - reference) ** 2))
            ranking.append({"layer": layer, "logit_mse": error})
            bar.update(task, advance=1, status=layer)
    return sorted(ranking, key=lambda r: -r["logit_mse"])


def keep_float(ranking: list[dict], options: Int8Options, accuracy_of: Callable[[Int8Options], tuple[float, str]],
               breach_of: Callable[[float], str | None], subject: str, start: int = 0) -> dict:
    """Keep the top layers of `ranking` in float, one more at a time, until `breach_of`
    (the budget check of an accuracy) finds nothing. `accuracy_of(options)` builds and scores
    the model with `options.float_layers` in float: (accuracy, where it was measured).
    `start`: the top layers already known not to be enough. Returns the layers kept in float
    and every step, for the manifest."""
    steps, held = [], False
    float_layers = tuple(entry["layer"] for entry in ranking[:start])
    for entry in ranking[start:]:
        float_layers += (entry["layer"],)
        accuracy, source = accuracy_of(dataclasses.replace(options, float_layers=float_layers))
        why = breach_of(accuracy)
        steps.append({"float_layers": len(float_layers), "layer": entry["layer"], "logit_mse": entry["logit_mse"],
                      "accuracy": accuracy, "accuracy_source": source, "breach": why})
        console.print(f"  {subject}: {entry['layer']} kept in float -> {accuracy:.2f}% ({source})"
                      + (f" [red]{why}" if why else ""))
        if why is None:
            held = True
            break
    return {"float_layers": list(float_layers), "steps": steps, "held": held,
            "outcome": (f"budget holds with {len(float_layers)} of {len(ranking)} layers in float" if held
                        else f"budget not met even with all {len(ranking)} layers in float")}
