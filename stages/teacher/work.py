"""Stage `teacher`: fine-tune every candidate teacher on the data, score it, keep the best
(or the best k, whose averaged logits then teach the student)."""

from __future__ import annotations

from pathlib import Path

import torch

from edgekiln.data.dataset import Dataset
from edgekiln.errors import InputError
from edgekiln.progress import console
from edgekiln.stages.result import StageResult
from edgekiln.stages.teacher import TeacherCandidate, TeacherConfig, TeacherSections
from edgekiln.stages.teacher.records import TeacherFigures
from edgekiln.targets.timing import measure
from edgekiln.training import evaluation, lr_range, modeling, schedule, trainer, zero_shot
from edgekiln.training.config import TrainConfig

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth")


def _check_randaugment(train: TrainConfig) -> None:
    """[train] randaugment must be a string timm parses (checked here: timm imports torch)."""
    if train.randaugment is not None:
        from timm.data.auto_augment import rand_augment_transform

        try:
            rand_augment_transform(train.randaugment, {})
        except Exception as e:
            raise InputError(f"train.randaugment: not a timm RandAugment string ({e}); "
                             "e.g. 'rand-m9-mstd0.5'") from None


def preflight(config: TeacherSections) -> None:
    """Fail fast, before any training, on a candidate that cannot be loaded."""
    cfg: TeacherConfig = config.teacher
    if "train" in config:
        _check_randaugment(config.train)
    candidates = cfg.resolved()
    if cfg.ensemble > len(candidates):
        raise InputError(f"teacher.ensemble = {cfg.ensemble} but there are only {len(candidates)} candidates")
    for i, cand in enumerate(candidates):
        key = f"teacher.candidates[{i}]"
        if cand.arch.endswith(CHECKPOINT_SUFFIXES):
            raise InputError(f"{key}: {cand.arch!r} is a file; give it as {{arch = \"<timm name>\", "
                             f"checkpoint = \"{cand.arch}\"}}")
        modeling.check_known_arch(key, cand.arch)
        if zero_shot.is_zero_shot(cand.arch):
            if cand.checkpoint is not None:
                raise InputError(f"{key}: a CLIP model is a directory: give it as \"clip:<dir>\"")
            zero_shot.check(key, cand.arch)
        elif modeling.is_transformers(cand.arch):
            modeling.check_transformers_classifier(key, cand.arch)
        elif cfg.pretrained and not cand.checkpoint and not cand.arch.startswith("hf-hub:"):
            import timm

            if not timm.list_pretrained(cand.arch):
                raise InputError(f"{key}: timm has no pretrained weights for {cand.arch!r} (teacher.pretrained = true)")
            reachable, why = modeling.pretrained_reachable(cand.arch)
            if not reachable:  # before the data is read and the pre-check runs, not at the download
                raise InputError(f"{key}: teacher.pretrained = true, but {why}: run where the weights download (or "
                                 "fill the local hub cache), or set teacher.pretrained = false to train the teachers "
                                 "from scratch")
        if cand.checkpoint is not None:
            if modeling.is_transformers(cand.arch):
                raise InputError(f"{key}: a transformers checkpoint is a directory: give it as \"hf:<dir>\"")
            try:
                modeling.load_checkpoint(modeling.create(cand.arch, num_classes=2), cand.checkpoint)
            except InputError as e:
                raise InputError(f"{key} ({cand.name}): {e}") from None


def _native_size(cfg: TeacherConfig, cand: TeacherCandidate) -> bool:
    """Whether the candidate runs at its weights' own input size (published, hub or local
    checkpoint weights) rather than at the data's (trained from scratch here)."""
    if zero_shot.is_zero_shot(cand.arch):  # its position embeddings are for its own size
        return True
    return cfg.image_size is None and (cfg.pretrained or cand.checkpoint is not None
                                       or modeling.is_transformers(cand.arch))


@torch.no_grad()
def host_latency_ms(bundle: modeling.ModelBundle) -> float:
    """Median batch-1 latency of the torch model on this machine's CPU, in milliseconds."""
    model = bundle.model.cpu().eval()
    x = bundle.example_input()
    return measure(lambda: model(x), warmup=3, runs=10).p50


def run(data: Dataset, config: TeacherSections, workdir: Path) -> StageResult:
    cfg: TeacherConfig = config.teacher
    train: TrainConfig = config.train
    scored, records = [], []
    for cand in cfg.resolved():
        native = _native_size(cfg, cand)
        clip = zero_shot.is_zero_shot(cand.arch)
        prompts = cfg.prompts or zero_shot.DEFAULT_PROMPTS
        if clip:
            model = zero_shot.create(cand.arch, data.classes, prompts)
        else:
            model = modeling.create(cand.arch, data.num_classes, pretrained=cfg.pretrained and not cand.checkpoint,
                                    seed=data.seed, image_size=None if native else cfg.image_size or data.image_size)
        note = ""
        if cand.checkpoint is not None:
            skipped = modeling.load_checkpoint(model, cand.checkpoint)
            note = f" (new head: {len(skipped)} tensors re-initialised)" if skipped else ""
        bundle = modeling.bundle(cand.arch, model, data.num_classes, cfg.image_size or data.image_size,
                                 source=cand.name, native_size=native)
        record = {"name": cand.name, "accuracy": None, "params": modeling.params(model),
                  "macs": modeling.macs(model, bundle.input_size), "input_size": bundle.input_size,
                  "host_latency_ms": host_latency_ms(bundle), "chosen": False}
        records.append(record)
        excluded = _excluded(cfg, record)
        if excluded:
            record["why"] = excluded
            console.print(f"  candidate {cand.name}: excluded, {excluded}")
            continue
        if clip:
            record["zero_shot"] = {"head": cfg.clip_head, "prompts": list(prompts),
                                   "classes": list(data.classes), "labels_used": cfg.clip_head == "linear-probe"}
        if clip and cfg.clip_head == "zero-shot":
            record["schedule"] = {"mode": "zero-shot", "epochs": 0,
                                  "stopped": "zero-shot: the head is built from the class names"}
        else:
            if clip:
                zero_shot.freeze_image_tower(model)
            lr = cfg.lr
            if lr == "auto":
                record["lr"] = lr_range.find(bundle, data, train, seed=data.seed, desc=f"teacher {cand.name}")
                lr = record["lr"]["lr"]
                console.print(f"  candidate {cand.name}: learning rate {lr:.3g} ({record['lr']['why']})")
            fitted = trainer.fit(bundle, data, schedule.from_config(cfg, train), lr=lr, seed=data.seed,
                                 desc=f"teacher {cand.name}", train=train, lr_key="teacher.lr")
            record["schedule"] = fitted["schedule"]
        record["accuracy"] = evaluation.evaluate(bundle, data)
        record["score"] = _score(cfg, record)
        scored.append((bundle, record))
        console.print(f"  candidate {cand.name}: {record['accuracy']:.2f}% at {bundle.input_size} px{note}")
    if not scored:
        raise InputError("teacher: every candidate is excluded by teacher.max_macs / teacher.max_latency_ms")
    # Highest score wins; ties go to the smaller model.
    scored.sort(key=lambda s: (s[1]["score"], -s[1]["params"]), reverse=True)
    chosen = scored[: cfg.ensemble]
    rule = "accuracy" if cfg.select == "accuracy" else "accuracy per GFLOP"
    for rank, (_, record) in enumerate(scored):
        record["chosen"] = rank < cfg.ensemble
        if rank == 0:
            record["why"] = f"best {rule}"
        elif record["chosen"]:
            record["why"] = f"ensemble member {rank + 1} of {cfg.ensemble} by {rule}"
        else:
            record["why"] = f"lower {rule} than {chosen[-1][1]['name']}"
    for record in records:
        if "zero_shot" in record:  # say what the head is, beside why it won or lost
            head = record["zero_shot"]
            record["why"] = (f"{record.get('why') or ''}; " if record.get("why") else "") + (
                f"{head['head']} head from {len(head['prompts'])} prompts per class name"
                + ("; no labels used" if not head["labels_used"] else "; trained on the labelled train split"))
    bundles = [b for b, _ in chosen]
    accuracy = chosen[0][1]["accuracy"]
    if len(bundles) > 1:
        ensemble_logits = torch.stack([evaluation.logits(b, data.val_x) for b in bundles]).mean(0)
        accuracy = evaluation.accuracy(ensemble_logits, data.val_y)
        console.print(f"  ensemble of {len(bundles)}: {accuracy:.2f}%")
    best = chosen[0][1]
    return StageResult.with_models(accuracy, bundles, params=sum(r["params"] for _, r in chosen),
                                   macs=sum(r["macs"] for _, r in chosen), figures=TeacherFigures(
        name=" + ".join(b.source for b in bundles), select=cfg.select, candidates=records,
        best_single_accuracy=best["accuracy"]))


def _excluded(cfg: TeacherConfig, record: dict) -> str:
    if cfg.max_macs is not None and record["macs"] > cfg.max_macs:
        return f"MACs {record['macs'] / 1e6:.1f}M > teacher.max_macs {cfg.max_macs / 1e6:.1f}M"
    if cfg.max_latency_ms is not None and record["host_latency_ms"] > cfg.max_latency_ms:
        return f"host latency {record['host_latency_ms']:.2f} ms > teacher.max_latency_ms {cfg.max_latency_ms}"
    return ""


def _score(cfg: TeacherConfig, record: dict) -> float:
    if cfg.select == "accuracy":
        return record["accuracy"]
    return record["accuracy"] / (2 * record["macs"] / 1e9)  # one MAC is two FLOPs
