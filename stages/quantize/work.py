"""Stage `quantize`: INT8 by post-training quantization (PTQ) or quantization-aware training
with distillation (QAT), calibrated on a representative sample.

The stage picks the calibration sample (class-balanced and seeded from the training split,
or seeded from a folder of unlabelled images) and stores it beside its result, so every
target's backend calibrates on the same images. It scores the INT8 model simulated in torch
(the TFLite scheme: per-tensor activations, per-channel symmetric weights). With QAT it
first fine-tunes the student under fake quantization with the KD loss; its model is then
the QAT-adapted float student, which the export stage quantizes per target and measures
again in each target's own runtime, and QAT's fake-quantize state, stored beside it, gives
the TFLite artifact the activation ranges QAT trained with.

When the plain INT8 simulation (PTQ) misses the stage's accuracy budget and
`accuracy_aware` is on, the stage keeps the most quantization-sensitive layers in float, one
at a time, until the simulation holds (training/mixed_precision.py): the stage is judged on
that, so a run never stops here when keeping some layers float would pass. The layers go on
to the export stage in the INT8 options, for the formats that can keep them float.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import save_file

from edgekiln import gates as budget
from edgekiln import progress
from edgekiln.calibration import balanced_sample, folder_sample, image_files
from edgekiln.data.dataset import Dataset, to_input
from edgekiln.errors import InputError
from edgekiln.progress import console
from edgekiln.stages.quantize import QuantizeConfig, QuantizeSections, bias_correction, equalization, sensitivity
from edgekiln.stages.quantize.records import Ladder, QatRecord, QuantizeRecord
from edgekiln.stages.result import StageResult
from edgekiln.targets.artifact import MixedPrecision
from edgekiln.targets.format import int8_simulation
from edgekiln.targets.int8 import Int8Options
from edgekiln.training import evaluation, mixed_precision, modeling, qat, schedule
from edgekiln.training.int8_recipe import CALIBRATION_FILE, QAT_STATE_FILE


def preflight(config: QuantizeSections) -> None:
    """A calibration folder that is missing or holds no images stops the run before training."""
    cfg: QuantizeConfig = config.quantize
    if cfg.calibration_path is not None:
        try:
            image_files(cfg.calibration_path)
        except ValueError as e:
            raise InputError(f"quantize.calibration_path: {e}") from e


def calibration_sample(data: Dataset, cfg: QuantizeConfig) -> tuple[torch.Tensor, dict]:
    """The representative images (uint8 NCHW) and a record of where they came from."""
    if cfg.calibration_path is not None:
        try:
            images, files = folder_sample(cfg.calibration_path, cfg.calibration_samples, data.seed, data.image_size)
        except ValueError as e:
            raise InputError(f"quantize.calibration_path: {e}") from e
        return images, {"source": str(cfg.calibration_path), "count": len(files), "files": files}
    if cfg.calibration_from == "unlabelled":  # seeded, in the order the images are stored (one pass over shards)
        pool = data.unlabelled_x
        count = min(cfg.calibration_samples, len(pool))
        picked = np.sort(np.random.default_rng(data.seed).choice(len(pool), count, replace=False)).tolist()
        return pool[torch.as_tensor(picked)], {"source": f"unlabelled images ({_where(data.unlabelled)})",
                                               "count": count, "indices": picked}
    indices = balanced_sample(data.train_y.numpy(), cfg.calibration_samples, data.seed).tolist()
    return data.train_x[torch.as_tensor(indices)], {
        "source": "train split, class-balanced", "count": len(indices), "indices": indices}




def _where(record: dict) -> str:
    shards = record.get("shards")
    return f"data.unlabelled_shards {shards}" if shards is not None else f"data.unlabelled_path {record['path']}"


def _simulated_logits(scheme, graph, images: torch.Tensor, bundle: modeling.ModelBundle) -> np.ndarray:
    return scheme.predict(graph, to_input(images, bundle.mean, bundle.std, bundle.input_size).numpy())


def _simulated_accuracy(scheme, graph, data: Dataset, bundle: modeling.ModelBundle) -> float:
    return evaluation.accuracy(_simulated_logits(scheme, graph, data.val_x, bundle), data.val_y)


def _keep_float(scheme, bundle, calibration: np.ndarray, options: Int8Options, data: Dataset, why: str, breach):
    """The INT8 simulation with its most sensitive layers kept in float, one more at a time,
    until `breach` finds nothing: (graph, val accuracy, record). When no number of float
    layers holds, the plain INT8 graph stays (the stage's gate then fails on it)."""
    console.print(f"  the INT8 simulation misses the budget ({why}); keeping its most sensitive layers in float")
    ranking = mixed_precision.rank_layers(bundle.model, calibration, options, scheme=scheme)
    exported = scheme.export_dynamic_batch(bundle.model.cpu().eval(), torch.from_numpy(calibration[:1]).float())

    def simulated(opts: Int8Options) -> tuple[float, str]:
        return _simulated_accuracy(scheme, scheme.simulate(bundle.model, calibration, opts, graph=exported), data,
                                   bundle), "torch simulation"

    found = mixed_precision.keep_float(ranking, options, simulated, breach, "quantize")
    record = {"applied": found["held"], "breach": why, "sensitivity": mixed_precision.SENSITIVITY,
              "ranking": ranking, **found}
    chosen = dataclasses.replace(options, float_layers=tuple(found["float_layers"]) if found["held"] else ())
    if not found["held"]:
        record.update(float_layers=[], why_not=found["outcome"])
    graph = scheme.simulate(bundle.model, calibration, chosen, graph=exported)
    return graph, _simulated_accuracy(scheme, graph, data, bundle), record


def _qat(cfg: QuantizeConfig, config: QuantizeSections, bundle: modeling.ModelBundle, data: Dataset, calibration: np.ndarray,
         options: Int8Options, scheme, previous: StageResult, reference: StageResult):
    """QAT with distillation from the reference, on a copy of `bundle`'s model: the INT8
    simulation it reached, its val accuracy, the tuned bundle, its fake-quantize state and
    its record (the manifest's quantize.qat)."""
    train = config.train
    plan = schedule.from_config(cfg, train)
    started = time.perf_counter()
    holds = budget.holds_with_margin(train.within_budget_margin, "quantize", (previous.stage, previous.accuracy),
                                     reference.accuracy, config.budget)
    # QAT tunes the model in place: on a copy, so that the model before it stays what the
    # stage hands on when QAT is not kept, and the reference (self-distillation from the
    # given model) stays the teacher.
    tuned = dataclasses.replace(bundle, model=copy.deepcopy(bundle.model))
    graph, state, record = qat.finetune(
        tuned, data, reference.bundles, epochs=plan, lr=cfg.lr, options=options, train=train,
        kd=config.distill, example=calibration, scheme=scheme,
        within_budget=holds if plan.auto and train.stop_when_within_budget else None)
    accuracy = _simulated_accuracy(scheme, graph, data, tuned)
    return graph, accuracy, tuned, state, {
        "epochs": record["epochs"], "lr": cfg.lr, "seconds": round(time.perf_counter() - started, 1),
        "distils_from": reference.stage, "float_accuracy": evaluation.evaluate(tuned, data), "accuracy": accuracy,
        "schedule": record}


@dataclasses.dataclass(frozen=True)
class _ModelRung:
    """A rung that makes another float model for INT8 (the same function rescaled, or
    corrected for INT8's mean shift): kept, it is the model export converts."""

    make: Callable  # (model, calibration, options) -> (model, its record)
    doing: str  # what the console says while it works
    said: Callable[[dict], str]  # the rung in the ladder's sentence
    step: Callable[[dict], dict]  # what its ladder step records of it


_MODEL_RUNGS = {
    "equalization": _ModelRung(
        lambda model, calibration, options: equalization.equalized(model, calibration),
        "equalizing channel ranges across layer pairs",
        lambda r: f"cross-layer equalization ({r['pairs']} layer pairs)", lambda r: {"pairs": r["pairs"]}),
    "bias_correction": _ModelRung(
        lambda model, calibration, options: bias_correction.corrected(model, calibration, options.per_channel),
        "correcting each layer's INT8 mean shift",
        lambda r: f"bias correction ({r['layers_corrected']} layers)", lambda r: r),
}


def _climb(cfg, scheme, bundle, calibration: np.ndarray, options: Int8Options, data: Dataset, graph,
           accuracy: float, breach, figures: QuantizeRecord, *, qat_rung=None, workdir: Path | None = None):
    """The repair ladder after plain PTQ, cheapest first, each rung scored on val, stopping
    at the first within budget: another activation calibrator, cross-layer equalization, bias
    correction, layers kept in float, then QAT with distillation (`qat_rung(bundle, options)`:
    _qat's result; its fake-quantize state is written to `workdir` when kept). Records every
    rung tried (accuracy, seconds, why it stopped) in `figures.ladder`; returns the graph, its
    accuracy, the options and the bundle (an equalized, bias-corrected or QAT-tuned model,
    when that rung was kept)."""
    steps = [{"rung": "plain", "calibrator": options.calibrator, "accuracy": accuracy, "seconds": None,
              "breach": breach(accuracy)}]
    for rung in cfg.rungs:
        why = breach(accuracy)
        if why is None:
            break
        started = time.perf_counter()
        if rung == "calibration":
            other = "percentile" if options.calibrator == "minmax" else "minmax"
            tried = dataclasses.replace(options, calibrator=other)
            with progress.status(f"  INT8 misses the budget ({why}); trying the {scheme.calibrator_used(tried)} "
                                 "calibrator"):
                candidate = scheme.simulate(bundle.model, calibration, tried)
                score = _simulated_accuracy(scheme, candidate, data, bundle)
            kept = score > accuracy
            steps.append({"rung": "calibration", "calibrator": other, "calibrator_used": scheme.calibrator_used(tried),
                          "accuracy": score, "seconds": round(time.perf_counter() - started, 2),
                          "breach": breach(score), "kept": kept})
            console.print(f"  ladder: {scheme.calibrator_used(tried)} calibration -> {score:.2f}% val "
                          f"({'kept' if kept else 'no better'})")
            if kept:
                graph, accuracy, options = candidate, score, tried
                figures.calibrator_chosen = other
        elif rung in _MODEL_RUNGS:
            remake = _MODEL_RUNGS[rung]
            with progress.status(f"  INT8 misses the budget ({why}); {remake.doing}"):
                model, record = remake.make(bundle.model, calibration, options)
                candidate = scheme.simulate(model, calibration, options)
                score = _simulated_accuracy(scheme, candidate, data, bundle)
            kept = score > accuracy
            steps.append({"rung": rung, "accuracy": score, "seconds": round(time.perf_counter() - started, 2),
                          "breach": breach(score), "kept": kept, **remake.step(record)})
            console.print(f"  ladder: {remake.said(record)} -> {score:.2f}% val ({'kept' if kept else 'no better'})")
            if kept:
                graph, accuracy = candidate, score
                bundle = dataclasses.replace(bundle, model=model)
                setattr(figures, rung, record)
        elif rung == "float_layers":
            graph, accuracy, mixed = _keep_float(scheme, bundle, calibration, options, data, why, breach)
            figures.mixed_precision = MixedPrecision(**mixed)
            steps.append({"rung": "float_layers", "accuracy": accuracy, "breach": breach(accuracy),
                          "seconds": round(time.perf_counter() - started, 2),
                          "float_layers": len(figures.mixed_precision.float_layers)})
        elif rung == "qat":
            # All of the model in INT8 again (float layers that could not hold the budget are
            # not kept), and the calibrator the ladder chose, fine-tuned under fake quantization.
            console.print(f"  ladder: INT8 misses the budget ({why}); QAT with distillation for {cfg.epochs} epochs")
            candidate, score, tuned, state, record = qat_rung(bundle, options)
            kept = score > accuracy
            steps.append({"rung": "qat", "accuracy": score, "breach": breach(score),
                          "seconds": round(time.perf_counter() - started, 2), "kept": kept, "epochs": record["epochs"]})
            console.print(f"  ladder: QAT ({record['epochs']} epochs) -> {score:.2f}% val "
                          f"({'kept' if kept else 'no better'})")
            if kept:
                graph, accuracy, bundle = candidate, score, tuned
                save_file(state, workdir / QAT_STATE_FILE)
                figures.qat = QatRecord(**record)
    final = breach(accuracy)
    figures.ladder = Ladder(rungs=["plain", *cfg.rungs], steps=steps,
                            stopped=(f"within budget at rung {steps[-1]['rung']}" if final is None else
                                     f"every rung tried, still {final}"))
    return graph, accuracy, options, bundle


def run(data: Dataset, config: QuantizeSections, workdir: Path, *, previous: StageResult,
        reference: StageResult) -> StageResult:
    cfg: QuantizeConfig = config.quantize
    bundle = previous.bundle
    images, sample = calibration_sample(data, cfg)
    np.save(workdir / CALIBRATION_FILE, images.numpy(), allow_pickle=False)
    calibration = to_input(images, bundle.mean, bundle.std, bundle.input_size).numpy()
    options = cfg.options()
    scheme = int8_simulation(cfg.simulation)
    with progress.status("  PTQ: calibrating and scoring the INT8 simulation"):
        graph = scheme.simulate(bundle.model, calibration, options)
        ptq_accuracy = _simulated_accuracy(scheme, graph, data, bundle)
    figures = QuantizeRecord(mode=cfg.mode, scheme=scheme.SCHEME, simulation=cfg.simulation, calibration=sample,
                             calibrator=cfg.calibrator, simulation_calibrator=scheme.calibrator_used(options),
                             per_channel=cfg.per_channel, ptq_accuracy=ptq_accuracy)
    accuracy = ptq_accuracy
    if cfg.mode == "qat":
        console.print(f"  PTQ would give {ptq_accuracy:.2f}%; QAT for {cfg.epochs} epochs with distillation")
        graph, accuracy, bundle, state, qat_record = _qat(cfg, config, bundle, data, calibration, options, scheme,
                                                          previous, reference)
        figures.qat = QatRecord(**qat_record)
        save_file(state, workdir / QAT_STATE_FILE)
        console.print(f"  QAT: {accuracy:.2f}% INT8-simulated (PTQ {ptq_accuracy:.2f}%), "
                      f"{figures.qat.float_accuracy:.2f}% in float")

    def breach(value: float) -> str | None:
        return budget.breach(value, "quantize", (previous.stage, previous.accuracy), reference.accuracy,
                             config.budget)

    if cfg.mode == "ptq":
        def qat_rung(bundle, options):
            return _qat(cfg, config, bundle, data, calibration, options, scheme, previous, reference)

        graph, accuracy, options, bundle = _climb(cfg, scheme, bundle, calibration, options, data, graph, accuracy,
                                                  breach, figures, qat_rung=qat_rung, workdir=workdir)
        figures.simulation_calibrator = scheme.calibrator_used(options)
    float_layers = tuple(figures.mixed_precision.float_layers) if figures.mixed_precision else ()
    figures.layers = sensitivity.layer_sqnr(bundle.model, calibration, cfg.per_channel, float_layers)
    figures.layers_method = sensitivity.METHOD
    result = StageResult.with_model(accuracy, bundle, params=modeling.params(bundle.model), macs=previous.macs,
                                    figures=figures)
    # Graded on test as it was scored on val: the INT8 simulation (PTQ's, or QAT's own).
    result.grader = lambda test_x, test_y: [evaluation.grading(_simulated_logits(scheme, graph, test_x, bundle),
                                                               test_y)]
    return result
