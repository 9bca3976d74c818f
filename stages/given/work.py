"""Stage `given` ([model]): load the user's trained classifier as it was trained, check it fits the
data, optionally fine-tune it, and score it: the reference of the run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from edgekiln.data.dataset import Dataset
from edgekiln.errors import InputError
from edgekiln.progress import console
from edgekiln.stages.given import TRANSFORMERS, GivenSections, ModelConfig, metadata
from edgekiln.stages.result import StageResult
from edgekiln.stages.given.records import FineTuned, GivenModelFigures
from edgekiln.system.files import sha256
from edgekiln.training import evaluation, modeling, schedule, trainer


def preflight(config: GivenSections) -> None:
    """Before the data is read: the architecture exists, and the checkpoint loads into it
    (every key; the classifier's class count is checked against the data when it runs)."""
    cfg: ModelConfig = config.model
    modeling.check_known_arch("model.arch", cfg.arch)
    if cfg.arch.startswith(TRANSFORMERS):
        modeling.check_transformers_classifier("model.arch", cfg.arch)
        return
    if cfg.checkpoint is not None:
        model = modeling.create(cfg.arch, num_classes=2, image_size=cfg.image_size)
        try:
            modeling.fitting_state(model, cfg.checkpoint, cfg.arch, any_class_count=True)
        except InputError as e:
            raise InputError(f"model.checkpoint: {e}") from None


def load(cfg: ModelConfig, data: Dataset) -> tuple[modeling.ModelBundle, dict[str, str]]:
    """The model with its weights as trained, fed as it was trained (size, mean, std: the
    config's, else what the checkpoint records, else the architecture's defaults), and where
    each of those came from."""
    hf_dir = Path(cfg.arch[len(TRANSFORMERS):]) if cfg.arch.startswith(TRANSFORMERS) else None
    recorded = metadata.read(cfg.checkpoint, hf_dir if hf_dir is not None and hf_dir.is_dir() else None)
    given = metadata.Preprocessing(cfg.image_size, cfg.mean, cfg.std,
                                   {k: f"[model] {k}" for k in ("image_size", "mean", "std")
                                    if getattr(cfg, k) is not None})
    chosen = given.merged(recorded)
    if cfg.arch.startswith(TRANSFORMERS):
        model = _transformers(cfg.arch, data)
        bundle = modeling.bundle(cfg.arch, model, data.num_classes, chosen.image_size or data.image_size,
                                 source=cfg.name, native_size=chosen.image_size is None)
        defaults = f"the image processor of {cfg.arch}"
    else:
        size = chosen.image_size or data.image_size
        model = modeling.create(cfg.arch, data.num_classes, pretrained=cfg.checkpoint is None, seed=data.seed,
                                image_size=size)
        if cfg.checkpoint is not None:
            try:
                modeling.load_exact(model, cfg.checkpoint, cfg.arch)
            except InputError as e:
                raise InputError(f"model.checkpoint: {e}") from None
        bundle = modeling.bundle(cfg.arch, model, data.num_classes, size, source=cfg.name)
        defaults = f"timm's default for {cfg.arch}"
    if chosen.mean is not None:
        bundle = dataclasses.replace(bundle, mean=tuple(chosen.mean), std=tuple(chosen.std))
    sources = {"image_size": chosen.sources.get("image_size", "[data] image_size" if hf_dir is None else defaults),
               "mean": chosen.sources.get("mean", defaults), "std": chosen.sources.get("std", defaults)}
    return bundle, sources


def _transformers(arch: str, data: Dataset):
    """A transformers image classifier with its own head, which must have the data's classes."""
    from transformers import AutoModelForImageClassification

    ref = arch[len(TRANSFORMERS):]
    try:
        hf = AutoModelForImageClassification.from_pretrained(ref)
    except Exception as e:
        raise InputError(f"model.arch: cannot load transformers model {ref!r}: {str(e).splitlines()[0]}") from None
    labels = [hf.config.id2label[i] for i in range(hf.config.num_labels)] if hf.config.id2label else []
    if hf.config.num_labels != data.num_classes:
        raise InputError(f"model.arch: {ref} has {hf.config.num_labels} classes ({', '.join(map(str, labels[:5]))}"
                         f"{', ...' if len(labels) > 5 else ''}) but the data has {data.num_classes}")
    if sorted(map(str, labels)) == sorted(data.classes) and list(map(str, labels)) != list(data.classes):
        raise InputError(f"model.arch: {ref} numbers its classes {labels}, the data {data.classes}: set "
                         f"data.classes = {labels} so each output means the same class")
    return modeling.TransformersClassifier(hf)


def run(data: Dataset, config: GivenSections, workdir: Path) -> StageResult:
    cfg: ModelConfig = config.model
    bundle, sources = load(cfg, data)
    figures = GivenModelFigures(name=cfg.name, arch=cfg.arch, input_size=bundle.input_size, mean=list(bundle.mean),
                                std=list(bundle.std), preprocessing_from=sources, fine_tuned=None,
                                checkpoint=None if cfg.checkpoint is None else str(cfg.checkpoint),
                                checkpoint_sha256=None if cfg.checkpoint is None else sha256(cfg.checkpoint))
    if cfg.epochs != 0:
        before = evaluation.evaluate(bundle, data)
        fitted = trainer.fit(bundle, data, schedule.from_config(cfg, config.train), lr=cfg.lr, seed=data.seed,
                             desc=f"fine-tune {cfg.name}", train=config.train, lr_key="model.lr")
        figures.fine_tuned = FineTuned(val_accuracy_before=before, schedule=fitted["schedule"])
    accuracy = evaluation.evaluate(bundle, data)
    console.print(f"  {cfg.name}: {accuracy:.2f}% on val at {bundle.input_size} px"
                  + (" (fine-tuned)" if figures.fine_tuned else " (as given)"))
    return StageResult.with_model(accuracy, bundle, params=modeling.params(bundle.model),
                                  macs=modeling.macs(bundle.model, bundle.input_size), figures=figures)
