"""Intervals for accuracies measured on a few hundred images, where one image is 0.3 points.

- An accuracy: the exact (Clopper-Pearson) binomial interval.
- A drop between two models on the same images: paired, so only the images on which they
  disagree carry information. With b images only the reference gets right and c only the
  other, the drop is (b - c) / n. Conditional on the b + c discordant images, b is
  Binomial(b + c, p) (exact McNemar); the Clopper-Pearson interval of p maps onto the drop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEVEL = 0.95


def clopper_pearson(successes: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Exact two-sided interval of a binomial proportion (as fractions in [0, 1])."""
    from scipy.stats import beta

    if n <= 0:
        raise ValueError("an interval needs at least one trial")
    alpha = 1.0 - level
    low = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, n - successes + 1))
    high = 1.0 if successes == n else float(beta.ppf(1 - alpha / 2, successes + 1, n - successes))
    return low, high


def accuracy_interval(correct, level: float = LEVEL) -> list[float]:
    """[low, high] in percent for a vector of per-image hits (bool)."""
    correct = np.asarray(correct, dtype=bool)
    low, high = clopper_pearson(int(correct.sum()), len(correct), level)
    return [100.0 * low, 100.0 * high]


@dataclass(frozen=True)
class PairedDrop:
    """How many points `model` is below `reference` on the same images, with its interval."""

    drop: float  # points, positive when the model is worse
    low: float
    high: float
    only_reference: int  # images only the reference gets right (b)
    only_model: int  # images only the model gets right (c)
    n: int
    p_value: float  # exact McNemar: the two are equally accurate

    def to_dict(self) -> dict:
        return {"drop": self.drop, "interval": [self.low, self.high], "only_reference_right": self.only_reference,
                "only_model_right": self.only_model, "images": self.n, "mcnemar_p": self.p_value,
                "level": LEVEL}


def paired_drop(reference_correct, model_correct, level: float = LEVEL) -> PairedDrop:
    """The drop of `model` against `reference`, scored on the same images (bool hit vectors)."""
    from scipy.stats import binomtest

    ref = np.asarray(reference_correct, dtype=bool)
    mod = np.asarray(model_correct, dtype=bool)
    if ref.shape != mod.shape or ref.ndim != 1 or len(ref) == 0:
        raise ValueError(f"paired hits need two equal, non-empty vectors, got {ref.shape} and {mod.shape}")
    n = len(ref)
    b, c = int((ref & ~mod).sum()), int((~ref & mod).sum())
    discordant = b + c
    drop = 100.0 * (b - c) / n
    if discordant == 0:
        return PairedDrop(drop, 0.0, 0.0, b, c, n, 1.0)
    p_low, p_high = clopper_pearson(b, discordant, level)
    scale = 100.0 * discordant / n
    return PairedDrop(drop, (2 * p_low - 1) * scale, (2 * p_high - 1) * scale, b, c, n,
                      float(binomtest(b, discordant, 0.5).pvalue))


def hits(top1, labels) -> np.ndarray:
    """Per-image correctness of predicted classes."""
    return np.asarray(top1) == np.asarray(labels)


# A paired drop is told from none (exact McNemar, two-sided, 95 %) once 6 more images are
# lost than won with none won back (p = 2 / 2**6 = 0.031; 5 gives 0.063): a split of n images
# cannot resolve a drop under 6 / n.
RESOLVING_IMAGES = 6


def smallest_resolvable_drop(images: int) -> float:
    """The smallest accuracy drop, in points, that `images` paired images can tell from none."""
    return RESOLVING_IMAGES * 100.0 / max(images, 1)


def images_to_resolve(points: float) -> int:
    """The images a split needs to tell a drop of `points` from none."""
    return int(-(-RESOLVING_IMAGES * 100.0 // points))

