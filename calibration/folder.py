"""Calibration images from a folder of unlabelled images (any layout, searched recursively)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgekiln.calibration.images import IMAGE_SUFFIXES, read_square
from edgekiln.system.files import content_digest


def image_files(root: Path) -> list[Path]:
    """Every image under `root`, sorted; ValueError when it is not a folder or holds none."""
    if not root.is_dir():
        raise ValueError(f"{root} is not a directory")
    files = sorted(f for f in root.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{root} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def folder_sample(root: Path, count: int, seed: int, size: int):
    """Up to `count` images drawn at random (seeded) from `root`, resized and center-cropped
    to `size`: uint8 NCHW, and their paths relative to `root`. ValueError when the folder
    is missing, empty or holds an unreadable image (naming it)."""
    files = image_files(root)
    rng = np.random.default_rng(seed)
    picked = sorted(rng.permutation(len(files))[:count].tolist())
    x = torch.from_numpy(np.stack([read_square(files[i], size) for i in picked])).permute(0, 3, 1, 2).contiguous()
    return x, [files[i].relative_to(root).as_posix() for i in picked]


def folder_fingerprint(root: Path) -> list:
    """What a folder contributes to a cache key: every image's path within it and content
    hash (not its times or where the folder is: a fresh checkout keys the same)."""
    if not root.is_dir():
        return [str(root)]
    return [(f.relative_to(root).as_posix(), content_digest(f))
            for f in sorted(root.rglob("*")) if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
