"""Stage `export`: one artifact per target, validated in its own runtime and measured on its
target's latency profile (host, device or estimate). The artifact is INT8 unless the target
asks for a choice of encodings (then the fastest within budget ships; see encoding.py). An
INT8 artifact that misses its accuracy budget gets its most sensitive layers kept in float
(accuracy-aware quantization) where its format can mix precisions."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from importlib.metadata import version
from pathlib import Path

import torch

from edgekiln import gates as budget
from edgekiln import progress
from edgekiln.data.dataset import Dataset, to_input
from edgekiln.progress import console
from edgekiln.stages.export.records import ExportFigures
from edgekiln.stages.result import StageResult
from edgekiln.system.records import dumped
from edgekiln.targets import encodings, evaluate, get_format, runners
from edgekiln.targets.artifact import Artifact
from edgekiln.targets.cost import cost_features
from edgekiln.system.files import size_bytes
from edgekiln.targets.format import int8_simulation
from edgekiln.targets.int8 import Int8Options
from edgekiln.targets.profiles import SHIPPED_DIR
from edgekiln.stages.export import ExportSections
from edgekiln.targets.target import TargetConfig, artifact_budgets
from edgekiln.training import evaluation, mixed_precision
from edgekiln.training.int8_recipe import calibration_images, int8_options


def preprocessing(bundle) -> dict:
    """How the model body was trained to see an image: what its float input is. An artifact
    may take another input (NHWC pixels, its own scaling) and fold this inside it: what an app
    feeds each artifact is the artifact's `interface` (in its metadata and the manifest)."""
    return {"image_size": bundle.input_size, "layout": "NCHW", "color": "RGB",
            "scale": "pixel / 255", "mean": list(bundle.mean), "std": list(bundle.std),
            "describes": "the model body's training input; each artifact's own input is its 'interface'"}


def _runtime_accuracy(fmt, target, profile, path, val_x, val_y, float_top1, bundle, options,
                      encoding: str = encodings.DEFAULT, split: str = "val", with_top1: bool = False) -> dict:
    """Accuracy and top-1 agreement with the torch model on `split`'s images, in the
    artifact's own runtime where one can run it (here, or a device over ssh), else on the
    format's torch proxy; `with_top1` adds the per-image top-1."""
    predicted, record = evaluate.runtime_logits(
        fmt, f"target {target.name}", profile, path, val_x,
        proxy=lambda: fmt.proxy_model(bundle.model, options, encoding), status=progress.status)
    record.update(accuracy=evaluate.top1_accuracy(predicted, val_y),
                  agreement=float((predicted.argmax(1) == float_top1).mean() * 100))
    if with_top1:
        record["top1"] = predicted.argmax(1).tolist()
    return record


class _AccuracyAware:
    """What accuracy-aware quantization needs across targets: the budget check, and the
    layer ranking, computed once (on first need) and shared by every target."""

    def __init__(self, bundle, calibration, options: Int8Options, breach, float_accuracy: float, scheme,
                 ranking: list[dict] | None = None):
        self.bundle, self.calibration, self.options, self.scheme = bundle, calibration, options, scheme
        self.breach, self.float_accuracy = breach, float_accuracy
        # The quantize stage's ranking, where it made one: the same model, sample and options
        # (its calibrator, no float layers), so the same order; ranking again costs a
        # simulation per layer (minutes on a larger model).
        self._ranking: list[dict] | None = ranking
        self._graph = None

    @property
    def ranking(self) -> list[dict]:
        if self._ranking is None:
            console.print(f"  ranking {self.bundle.arch}'s layers by sensitivity to INT8")
            plain = dataclasses.replace(self.options, float_layers=())  # the quantize stage's choice ranks the same
            self._ranking = mixed_precision.rank_layers(self.bundle.model, self.calibration, plain, scheme=self.scheme)
        return self._ranking

    def simulated_accuracy(self, options: Int8Options, val_x, val_y) -> float:
        """Accuracy of the INT8 simulation ([quantize] simulation's scheme) with `options`."""
        if self._graph is None:
            self._graph = self.scheme.export_dynamic_batch(self.bundle.model.cpu().eval(),
                                                    torch.from_numpy(self.calibration[:1]).float())
        simulated = self.scheme.simulate(self.bundle.model, self.calibration, options, graph=self._graph)
        return evaluation.accuracy(self.scheme.predict(simulated, val_x), val_y)


def _keep_float(fmt, target, aware: _AccuracyAware, why: str, int8_accuracy: float, build, score,
                val_x, val_y) -> tuple[dict, Int8Options]:
    """Accuracy-aware quantization of one artifact that broke its budget (`why`): layers kept
    in float one at a time. Each step is scored in the runtime, except TFLite, whose steps
    are scored on its torch simulation (formats whose INT8 is the PT2E scheme: a conversion
    takes half a minute); its chosen
    artifact is then measured in the runtime, and where the runtime disagrees, the search
    goes on there, one converted artifact per step. When no step holds, the most accurate
    one measured in the runtime ships (plain INT8 if none beat it)."""
    # What the artifact was built with: the quantize stage's float layers, where it can keep any.
    built = aware.options if fmt.MIXED_PRECISION else dataclasses.replace(aware.options, float_layers=())
    ceiling = aware.breach(aware.float_accuracy)
    if ceiling is not None:  # the reference (the INT8 simulation) can beat float by noise
        console.print(f"  [yellow]{target.name}: INT8 misses the budget ({why}), and so does the float model")
        return {"applied": False, "breach": why,
                "why_not": f"no layer kept in float can meet the budget: the float model itself scores "
                           f"{aware.float_accuracy:.2f}% ({ceiling})"}, built
    wide = fmt.INT16_LAYERS and aware.options.sensitive_as == "int16"
    console.print(f"  [yellow]{target.name}: INT8 misses the budget ({why}); keeping sensitive layers in float"
                  + (" (int16 activations in the artifact: sensitive_layers = \"int16\")" if wide else ""))
    if not fmt.MIXED_PRECISION:
        return {"applied": False, "breach": why,
                "why_not": f"{target.format} artifacts cannot keep layers in float here"}, built

    def in_runtime(options: Int8Options) -> tuple[float, str]:
        build(options)
        return score(options)["accuracy"], "runtime"

    def simulated(options: Int8Options) -> tuple[float, str]:
        return aware.simulated_accuracy(options, val_x, val_y), "torch simulation"

    # An artifact whose INT8 is the simulated scheme itself scores the search's steps in the
    # simulation instead of converting each (slow); the choice is then measured in its runtime.
    simulate = fmt.INT8_SIMULATION == aware.scheme.__name__
    # The quantize stage's float layers (the top of the same ranking) are known not to be too few.
    found = mixed_precision.keep_float(aware.ranking, aware.options, simulated if simulate else in_runtime,
                                       aware.breach, target.name, start=len(aware.options.float_layers))
    options = dataclasses.replace(aware.options, float_layers=tuple(found["float_layers"]))
    if simulate:
        accuracy, source = in_runtime(options)
        missed = aware.breach(accuracy)
        found["steps"].append({"float_layers": len(options.float_layers), "layer": None, "accuracy": accuracy,
                               "accuracy_source": source, "breach": missed,
                               "note": "the simulation's choice, measured in the runtime"})
        if missed is not None and found["held"]:
            console.print(f"  [yellow]{target.name}: the runtime gives {accuracy:.2f}% ({missed}); "
                          "going on in the runtime")
            more = mixed_precision.keep_float(aware.ranking, aware.options, in_runtime, aware.breach, target.name,
                                              start=len(options.float_layers))
            found = {**more, "steps": found["steps"] + more["steps"],
                     "outcome": f"{more['outcome']} (the simulation's choice of {len(options.float_layers)} "
                                "missed in the runtime; the search went on there)"}
            options = dataclasses.replace(aware.options, float_layers=tuple(found["float_layers"]))
        elif missed is not None:
            found["held"] = False
    if not found["held"]:
        found, options = _most_accurate(found, aware, int8_accuracy, build)
    return {"applied": True, "breach": why, "sensitivity": mixed_precision.SENSITIVITY,
            "ranking": aware.ranking, **found}, options


def _most_accurate(found: dict, aware: _AccuracyAware, int8_accuracy: float, build) -> tuple[dict, Int8Options]:
    """A search that never met the budget ships its most accurate step measured in the
    runtime (fewest float layers on a tie), or plain INT8 when no step beat it; the
    artifact is rebuilt unless that is the last one built."""
    measured = [(s["accuracy"], -s["float_layers"]) for s in found["steps"] if s["accuracy_source"] == "runtime"]
    # `int8_accuracy` was measured with the quantize stage's float layers, if it kept any
    accuracy, count = max(measured + [(int8_accuracy, -len(aware.options.float_layers))])
    count = -count
    layers = tuple(entry["layer"] for entry in aware.ranking[:count])
    options = dataclasses.replace(aware.options, float_layers=layers)
    last_built = found["steps"][-1]["float_layers"] if found["steps"] else 0  # the last step is a runtime one
    if count != last_built:
        build(options)
    what = f"{count} layers in float" if count else "plain INT8"
    return {**found, "float_layers": list(layers),
            "outcome": f"{found['outcome']}; ships the most accurate measured: {what} ({accuracy:.2f}%)"}, options


def _latency(target, profile, path, features, precision, candidate: bool = False,
             other_layers: dict[str, int] | None = None) -> dict:
    return evaluate.latency(f"target {target.name}", profile, path, features, precision,
                            allow_estimate=target.allow_estimate, candidate=candidate, status=progress.status,
                            other_layers=other_layers)


def _candidate(target: TargetConfig, encoding: str, path: Path, bundle, features, calibration, val_x, val_y,
               float_top1, metadata, aware: _AccuracyAware | None, options: Int8Options,
               choosing: bool = False) -> Artifact:
    """Build the target's artifact in `encoding` at `path`, score it in its runtime (keeping
    layers in float where INT8 breaks the budget), and measure it on the target's profile."""
    fmt = get_format(target.format)
    profile = target.effective_profile
    precision = fmt.ENCODINGS[encoding]
    interface = fmt.interface(target.app_io, preprocessing(bundle))  # what this artifact itself takes and gives
    metadata = {**metadata, "edgekiln_cost": json.dumps(features.to_dict()), "edgekiln_precision": precision,
                "edgekiln_encoding": encoding, "edgekiln_io": target.app_io, "interface": json.dumps(interface),
                "description": f"{metadata['description']}, {encodings.DESCRIPTION.get(encoding, encoding)}"}
    applied: dict = {}
    int8 = encoding == "int8"
    if options.float_layers and not fmt.MIXED_PRECISION:  # the quantize stage's float layers: not here
        options = dataclasses.replace(options, float_layers=())

    def build(opts: Int8Options) -> None:
        opts, for_device = fmt.for_profile(opts, profile)  # e.g. ONNX's weight type for the device's kernels
        # Which layers are not at the artifact's precision: `check` and `bench` read it back (an
        # estimate of such a model has no measured row to bound it).
        kept = _other_layers(fmt, opts) if int8 else {}
        with progress.status(f"  {target.name}: converting to {target.format} ({encoding})"):
            applied.update(fmt.export(bundle.model, bundle.example_input(), calibration, path,
                                      {**metadata, "edgekiln_other_layers": json.dumps(kept)}, encoding, opts))
        if int8:
            applied.update(for_device)

    def score(opts: Int8Options) -> dict:
        return _runtime_accuracy(fmt, target, profile, path, val_x, val_y, float_top1, bundle, opts, encoding)

    started = time.perf_counter()
    build(options)
    convert_seconds = time.perf_counter() - started
    console.print(f"  {target.name}: {target.format} {encoding} artifact written ({convert_seconds:.0f} s)")
    artifact = Artifact(
        target=target.name, format=target.format, file=path.name, encoding=encoding, io=target.app_io,
        runtime=fmt.RUNTIME,
        precision=precision, threads=profile.runtime.threads, profile=profile.name,
        **artifact_budgets(target, profile),
        profile_file=None if profile.path is None or profile.path.parent == SHIPPED_DIR else str(profile.path),
        convert_seconds=round(convert_seconds, 1), cost_features=features.to_dict())
    accuracy = score(options)
    why = aware.breach(accuracy["accuracy"]) if aware is not None and int8 else None
    if why is not None:
        artifact.int8_accuracy = accuracy["accuracy"]
        artifact.mixed_precision, options = _keep_float(fmt, target, aware, why, accuracy["accuracy"], build, score,
                                                        val_x, val_y)
        accuracy = score(options)
    artifact.quantization = dict(applied)
    if int8 and options.float_layers and options.sensitive_as == "int16" and not fmt.INT16_LAYERS:
        artifact.quantization["sensitive_layers"] = (f"kept in float: {target.format} cannot give layers int16 "
                                                     "activations here ([quantize] sensitive_layers = \"int16\")")
    artifact.size_bytes = size_bytes(path)
    artifact.update(accuracy)
    artifact.update(_latency(target, profile, path, features, precision, candidate=choosing,
                             other_layers=_other_layers(fmt, options) if int8 else {}))
    artifact.structure = fmt.check(path, tuple(bundle.example_input().shape), encoding)
    artifact.interface = interface
    return artifact


def _other_layers(fmt, options: Int8Options) -> dict[str, int]:
    """How many layers an INT8 artifact built with `options` keeps at another precision."""
    if not options.float_layers:
        return {}
    int16 = options.sensitive_as == "int16" and fmt.INT16_LAYERS
    if not int16 and not fmt.MIXED_PRECISION:
        return {}
    return {"int16" if int16 else "float": len(options.float_layers)}


def _remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def _interleaved_rounds(target: TargetConfig, workdir: Path, records: list[Artifact], breach
                        ) -> tuple[dict[int, list[float]], dict]:
    """The round p50s of the candidates within budget that the profile's device measured,
    timed again interleaved (record index -> rounds), and how they were timed; nothing where
    fewer than two such candidates are left or the latencies are estimates."""
    profile = target.effective_profile
    measured = [i for i, r in enumerate(records)
                if not encodings.failures(r, breach) and r.latency_source in ("host", "device")]
    if len(measured) < 2:
        return {}, {"interleaved": False, "why": "fewer than two candidates within budget were measured on a device"}
    with progress.status(f"  {target.name}: timing {len(measured)} candidates interleaved, "
                         f"{profile.runner.choice_rounds} rounds"), \
            evaluate.device_errors(f"target {target.name}", profile):
        found = runners.interleave([workdir / records[i].file for i in measured], profile)
    rounds = dict(zip(measured, found.round_p50_ms))
    return rounds, {"interleaved": True, "rounds": found.rounds, "runs_per_round": found.runs_per_round,
                    "runner": found.runner, "device": found.device, "tool": found.tool,
                    "min_margin": encodings.MIN_MARGIN, "notes": found.notes}


def _export_one(target: TargetConfig, workdir: Path, breach, **inputs) -> Artifact:
    """The target's artifact: INT8, or the fastest within budget of its candidate encodings
    (the others are deleted; the manifest keeps what each measured, and why the winner won)."""
    fmt = get_format(target.format)
    final = workdir / target.artifact_name
    wanted = encodings.candidates(target.encoding, fmt.ENCODINGS, fmt.ON_REQUEST)
    if target.encoding is None:
        return _candidate(target, wanted[0], final, **inputs)
    console.print(f"  {target.name}: choosing among {', '.join(wanted)} on profile {target.effective_profile.name}")
    stem = final.name[: -len(fmt.SUFFIX)] if final.name.endswith(fmt.SUFFIX) else final.stem
    records = [_candidate(target, e, workdir / f"{stem}.{e}{fmt.SUFFIX}", choosing=True, **inputs) for e in wanted]
    rounds, timing = _interleaved_rounds(target, workdir, records, breach)
    best, why = encodings.choose(records, breach, rounds)
    for i, r in enumerate(records):
        if i != best:
            _remove(workdir / r.file)
    _remove(final)
    (workdir / records[best].file).rename(final)
    artifact = dataclasses.replace(records[best], file=target.artifact_name)
    artifact.encoding_choice = {"asked": target.encoding, "chosen": artifact.encoding, "why": why, "timing": timing,
                                "candidates": [encodings.summary(r, breach, rounds.get(i))
                                               for i, r in enumerate(records)]}
    console.print(f"  {target.name}: {artifact.encoding} ships: {why}")
    return artifact


def run(data: Dataset, config: ExportSections, workdir: Path, *, previous: StageResult,
        reference: StageResult) -> StageResult:
    targets: list[TargetConfig] = config.targets
    quantize = config.quantize  # the [quantize] section: the INT8 options and accuracy_aware
    quantized = previous
    bundle = quantized.bundle
    calibration = calibration_images(quantized, bundle)
    options = int8_options(quantized, quantize.options())
    previous, teacher = (quantized.stage, quantized.accuracy), reference.accuracy

    def breach(accuracy: float) -> str | None:
        return budget.breach(accuracy, "export", previous, teacher, config.budget)

    val_x = to_input(data.val_x, bundle.mean, bundle.std, bundle.input_size).numpy()
    float_logits = evaluation.logits(bundle, data.val_x)
    float_top1 = float_logits.argmax(1).numpy()
    aware = None
    if quantize.accuracy_aware:
        aware = _AccuracyAware(bundle, calibration, options, breach, evaluation.accuracy(float_logits, data.val_y),
                               int8_simulation(quantize.simulation),
                               ranking=_ranking_of(quantized))
    metadata = {
        "edgekiln_version": version("edgekiln"),
        "labels": json.dumps(data.classes),
        "preprocessing": json.dumps(preprocessing(bundle)),
        "name": f"{bundle.arch} image classifier",
        "description": f"{bundle.arch} ({bundle.source}), {data.num_classes} classes",
    }
    features = cost_features(bundle.model, bundle.input_size)
    artifacts = [_export_one(t, workdir, breach, bundle=bundle, features=features, calibration=calibration,
                             val_x=val_x, val_y=data.val_y.numpy(), float_top1=float_top1, metadata=metadata,
                             aware=aware, options=options) for t in targets]
    worst = min(a.accuracy for a in artifacts)
    result = StageResult(accuracy=worst, files=[a.file for a in artifacts], artifacts=artifacts,
                         params=quantized.params, macs=quantized.macs,
                         figures=ExportFigures(preprocessing=preprocessing(bundle), labels=data.classes))
    result.grader = _artifacts_grader(targets, artifacts, workdir, bundle, options)
    return result


def _ranking_of(quantized: StageResult) -> list[dict] | None:
    """The quantize stage's layer ranking by sensitivity to INT8, where it made one."""
    mixed = quantized.figures.mixed_precision
    return [dumped(r) for r in mixed.ranking] if mixed and mixed.ranking else None


def _artifacts_grader(targets: list[TargetConfig], artifacts: list[Artifact], workdir: Path, bundle,
                      options: Int8Options):
    """Grades every artifact on the test split the way it was scored on val: in its own
    runtime (or the format's proxy where none runs here), recorded in the Artifact itself."""
    def grade(test_x: torch.Tensor, test_y: torch.Tensor) -> dict:
        x = to_input(test_x, bundle.mean, bundle.std, bundle.input_size).numpy()
        float_top1 = evaluation.logits(bundle, test_x).argmax(1).numpy()
        for target, artifact in zip(targets, artifacts):
            fmt = get_format(target.format)
            measured = _runtime_accuracy(fmt, target, target.effective_profile, workdir / artifact.file, x,
                                         test_y.numpy(), float_top1, bundle, options, artifact.encoding,
                                         split="test", with_top1=True)
            artifact.update({f"test_{k}": v for k, v in measured.items()})
            console.print(f"  {target.name}: {artifact.test_accuracy:.2f}% on the test split "
                          f"({artifact.test_accuracy_source})")
        worst = min(artifacts, key=lambda a: a.test_accuracy)  # the stage's figure, as on val
        return [evaluation.Grading(worst.test_accuracy, worst.test_top1)]
    return grade
