"""Class-balanced, seeded selection of calibration samples."""

from __future__ import annotations

import numpy as np


def balanced_sample(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Pick `count` indices into `labels`, as evenly spread over classes as possible.

    Classes are visited round-robin in a seeded random order, each drawing from
    its own seeded shuffle, so the sample is reproducible and a class with few
    examples gives all it has before the others give more. Returns sorted
    indices; `count` larger than the data gives every index.
    """
    labels = np.asarray(labels)
    if count <= 0:
        raise ValueError(f"calibration sample count must be positive, got {count}")
    if count >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.unique(labels))
    pools = {int(c): list(rng.permutation(np.flatnonzero(labels == c))) for c in classes}
    picked: list[int] = []
    while len(picked) < count:
        for c in classes:
            pool = pools[int(c)]
            if pool and len(picked) < count:
                picked.append(int(pool.pop()))
    return np.sort(np.asarray(picked))
