"""Stage `given`'s check before any stage: is the given model fed the way it was trained?

A compress run is only as right as its reference: a model fed at the wrong size or with the
wrong normalization scores low, every artifact matches that low score, and every gate holds.
So the given model is scored on a seeded sample of val under the configured preprocessing
and under the usual alternatives (the data's native size and common training sizes; mean/std
of ImageNet, 0.5, none, and pixels in [0, 255]), searched one axis at a time (size, then
normalization, then size again under the better normalization). When an alternative beats
the configured one by more than MARGIN points with 95 % confidence (paired, on the same
images), or when the model cannot be told from chance under any of them, the run is refused
(exit 2) naming what to pass. Before that, the model's outputs are checked to follow the
data's order of the classes: a model trained with its classes in another order is refused
naming the order to pass (`label_order`). Decided on val only, like every choice.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import torch

from edgekiln.errors import InputError
from edgekiln.progress import console

SAMPLE = 512  # val images the verdict is decided on (all of val when smaller)
SCREEN = 100  # of those, the images each alternative is first screened on
MARGIN = 1.0  # points an alternative must win by, at the low end of its 95 % paired interval
COMMON_SIZES = (32, 64, 96, 128, 160, 224)
NORMALIZATIONS = {
    "ImageNet mean/std": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "mean 0.5 / std 0.5": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "no normalization ([0, 1])": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    "pixels in [0, 255]": ((0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255)),
}


@dataclass(frozen=True)
class Candidate:
    """One way to prepare the input: size and mean/std (on pixel / 255)."""

    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def normalization(self) -> str:
        for label, (mean, std) in NORMALIZATIONS.items():
            if np.allclose(mean, self.mean, atol=1e-4) and np.allclose(std, self.std, rtol=1e-3):
                return label
        return f"mean {_values(self.mean)} / std {_values(self.std)}"

    def describe(self) -> str:
        return f"{self.size} px with {self.normalization()}"

    def advice(self) -> str:
        mean, std = _values(self.mean, ","), _values(self.std, ",")
        return (f"pass --image-size {self.size} --mean {mean} --std {std} to compress, or set [model] image_size = "
                f"{self.size}, mean = {[round(v, 6) for v in self.mean]}, std = {[round(v, 6) for v in self.std]} in the "
                "config")

    def record(self) -> dict:
        return {"image_size": self.size, "mean": list(self.mean), "std": list(self.std),
                "normalization": self.normalization()}


def _values(values, sep: str = "/") -> str:
    """One number when the three channels agree, else all three."""
    shown = [f"{v:.6g}" for v in values]
    return shown[0] if len(set(shown)) == 1 else sep.join(shown)


def inputs(cfg) -> dict:
    """What the verdict depends on besides the data (its fingerprint) and this code: the
    model section, its checkpoint as a path (the key holds its content, not where it is),
    and the data's source (its native size)."""
    return {"model": cfg.model.model_dump(),
            "data": {"source": cfg.data.source, "image_size": cfg.data.image_size}}


def _sizes(configured: int, native: int | None) -> list[int]:
    """The configured size first, the native size, and the common sizes up to the larger
    of the two: a model is rarely trained above both its data and its configured size."""
    top = max(configured, native or 0)
    sizes = [configured] + ([native] if native and native >= 16 else []) + [s for s in COMMON_SIZES if s <= top]
    return list(dict.fromkeys(sizes))


def _predictions(bundle, candidate: Candidate, images: torch.Tensor) -> np.ndarray:
    from edgekiln.training import evaluation

    fed = dataclasses.replace(bundle, input_size=candidate.size, mean=candidate.mean, std=candidate.std)
    return evaluation.logits(fed, images, batch_size=128).argmax(1).numpy()


def _hits(bundle, candidate: Candidate, images: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    return _predictions(bundle, candidate, images) == labels.numpy()


def label_order(predictions: np.ndarray, labels: np.ndarray, classes: list[str], how: str) -> dict:
    """Whether the model's outputs follow another order of the classes than the data's: the
    one-to-one map of outputs to classes that agrees with the most val labels (the assignment
    that maximizes the confusion matrix's trace). InputError, naming the order to pass, when
    that map beats the identity by more than MARGIN points at the low end of its paired 95 %
    interval and makes the model a working classifier (the low end of its accuracy's interval
    halfway from chance to 100 %); else the record."""
    from scipy.optimize import linear_sum_assignment

    from edgekiln.stats import accuracy_interval, paired_drop

    k = len(classes)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    true_of, output = linear_sum_assignment(-confusion)  # output[i] is the output that class true_of[i] gets
    class_of_output = np.empty(k, dtype=np.int64)
    class_of_output[output] = true_of
    as_numbered = predictions == labels
    remapped = class_of_output[predictions] == labels
    gain = paired_drop(remapped, as_numbered)  # remapped's accuracy minus as numbered, paired
    record = {"as_numbered": float(as_numbered.mean() * 100), "best_order": float(remapped.mean() * 100),
              "permuted": bool((class_of_output != np.arange(k)).any())}
    # Only an order that makes it a working classifier is named: matching outputs to classes
    # also lifts a model that predicts noise (one fed the wrong way) a few points.
    chance = 100.0 / k
    working = accuracy_interval(remapped)[0] > chance + (100 - chance) / 2
    if record["permuted"] and working and gain.low > MARGIN:
        order = [classes[c] for c in class_of_output]
        moved = [f"output {j} is '{order[j]}' (the data's '{classes[j]}')" for j in range(k) if order[j] != classes[j]]
        shown = "; ".join(moved[:4]) + (f"; and {len(moved) - 4} more" if len(moved) > 4 else "")
        raise InputError(
            f"label order: the given model's outputs follow another order of the classes than the data's "
            f"({how}): numbered as the data numbers them it scores {record['as_numbered']:.1f}% on val "
            f"({len(labels)} images); with its outputs read in this order, {record['best_order']:.1f}% (paired 95% "
            f"interval of the gain {gain.low:.1f} to {gain.high:.1f} points). {shown}. Pass --classes "
            f"{','.join(order)} to compress (the class names in the order of the model's outputs), or set [data] "
            f"classes = {order} in the config")
    return record


def search(bundle, images: torch.Tensor, labels: torch.Tensor, native: int | None) -> tuple[Candidate, Candidate, dict]:
    """The configured candidate, the best one found, and every screened candidate's accuracy.
    One axis at a time: sizes under the configured normalization, normalizations at the best
    size, and, when another normalization won, sizes again under it."""
    configured = Candidate(bundle.input_size, tuple(bundle.mean), tuple(bundle.std))
    screen_x, screen_y = images[:SCREEN], labels[:SCREEN]
    scores: dict[Candidate, float] = {}

    def best_of(candidates: list[Candidate], current: Candidate) -> Candidate:
        for c in candidates:
            if c not in scores:
                scores[c] = float(_hits(bundle, c, screen_x, screen_y).mean() * 100)
        return max([current] + candidates, key=lambda c: scores[c])  # ties keep `current`

    sizes = _sizes(configured.size, native)
    norms = [(configured.mean, configured.std)] + list(NORMALIZATIONS.values())
    best = best_of([Candidate(s, configured.mean, configured.std) for s in sizes], configured)
    best = best_of([Candidate(best.size, m, s) for m, s in norms], best)
    if (best.mean, best.std) != (configured.mean, configured.std):
        size_won = best.size
        best = best_of([Candidate(s, best.mean, best.std) for s in sizes], best)
        if best.size != size_won:
            best = best_of([Candidate(best.size, m, s) for m, s in norms], best)
    screened = {c.describe(): round(v, 2) for c, v in scores.items()}
    return configured, best, screened


def verdict(configured: Candidate, best: Candidate, configured_hits: np.ndarray, best_hits: np.ndarray,
            num_classes: int, screened: dict) -> dict:
    """The record of the check; InputError when the configured preprocessing is clearly
    worse than `best`, or when even the best cannot be told from chance."""
    from edgekiln.stats import accuracy_interval, paired_drop

    n = len(configured_hits)
    acc_cfg, acc_best = float(configured_hits.mean() * 100), float(best_hits.mean() * 100)
    worse = paired_drop(best_hits, configured_hits)
    record = {"images": n, "configured": {**configured.record(), "accuracy": acc_cfg},
              "best": {**best.record(), "accuracy": acc_best}, "screened_on": min(SCREEN, n),
              "screened": screened, "configured_below_best": worse.to_dict(), "margin": MARGIN}
    if best != configured and worse.low > MARGIN:
        raise InputError(
            f"preprocessing check: at {best.describe()} the given model scores {acc_best:.1f}% on val ({n} "
            f"images); as configured, {configured.describe()}, {acc_cfg:.1f}% (paired 95% interval of the "
            f"difference {worse.low:.1f} to {worse.high:.1f} points). It was most likely trained that way: "
            f"{best.advice()}. If the configured preprocessing is right after all, set [model] "
            "check_preprocessing = false (compress: --no-check-preprocessing)")
    chance = 100.0 / num_classes
    winner, winner_hits = (best, best_hits) if acc_best > acc_cfg else (configured, configured_hits)
    low, high = accuracy_interval(winner_hits)
    record["chance"] = chance
    if low <= chance:
        tried = ", ".join(screened)
        raise InputError(
            f"preprocessing check: the given model scores {max(acc_best, acc_cfg):.1f}% on val ({n} images, 95% "
            f"interval {low:.1f}-{high:.1f}) at its best ({winner.describe()}), which cannot be told from chance "
            f"({chance:.1f}% for {num_classes} classes). A reference at chance cannot gate anything. Tried: "
            f"{tried}. Likely causes: the classes are numbered in another order than the model's outputs "
            "([data] classes, or the class folders' sorted names), the input is prepared otherwise than in its "
            "training, or the checkpoint is not the trained one")
    record["verdict"] = "as configured" if best == configured or worse.low <= MARGIN else "refused"
    return record


def check(data, cfg) -> tuple[dict, dict]:
    """The pre-stage check (stages.Check): its record, and no section narrowed."""
    from edgekiln.data.native_size import native_size
    from edgekiln.stages.given import work

    model_cfg = cfg.model
    if not model_cfg.check_preprocessing:
        return {"skipped": "[model] check_preprocessing = false"}, {}
    if model_cfg.epochs != 0:
        return {"skipped": "the model is fine-tuned here ([model] epochs), on the preprocessing configured"}, {}
    started = time.perf_counter()
    bundle, _ = work.load(model_cfg, data)
    generator = torch.Generator().manual_seed(data.seed)
    order = torch.randperm(len(data.val_y), generator=generator)[:SAMPLE]
    images, labels = data.val_x[order], data.val_y[order]
    native = native_size(cfg.data.source, cfg.data.path)
    console.print(f"  scoring the given model on {len(order)} val images under its configured preprocessing and "
                  "the usual alternatives")
    configured = Candidate(bundle.input_size, tuple(bundle.mean), tuple(bundle.std))
    # A model whose outputs are numbered in another order scores near chance under every
    # preprocessing: its order is checked first, under the configured preprocessing.
    order = label_order(_predictions(bundle, configured, images), labels.numpy(), data.classes,
                        "the class folders' sorted names, or [data] classes")
    configured, best, screened = search(bundle, images, labels, native)
    configured_hits = _hits(bundle, configured, images, labels)
    best_hits = configured_hits if best == configured else _hits(bundle, best, images, labels)
    if best != configured:  # fed as it was trained, the order may show where it could not before
        label_order(_predictions(bundle, best, images), labels.numpy(), data.classes,
                    "the class folders' sorted names, or [data] classes")
    record = verdict(configured, best, configured_hits, best_hits, data.num_classes, screened)
    record["label_order"] = order
    record.update(native_size=native, seconds=round(time.perf_counter() - started, 2))
    console.print(f"  preprocessing: {configured.describe()}, {record['configured']['accuracy']:.1f}% on "
                  f"{record['images']} val images; no alternative clearly better ({len(screened)} tried, "
                  f"{record['seconds']:.1f} s)", markup=False)
    return record, {}
