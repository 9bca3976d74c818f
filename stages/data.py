"""Datasets: sklearn's digits (ships with scikit-learn) or a folder of class sub-folders.

Images are held in memory as uint8 NCHW at the configured size; models normalize them
with their own mean/std (see `to_input`). Splits are deterministic for a given seed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgekiln.calibration.images import IMAGE_SUFFIXES, center_square
from edgekiln.stages.errors import InputError



class DataConfig(BaseModel):
    """`[data]`: where the images come from and how they are split."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["digits", "imagefolder"] = "digits"
    path: Path | None = None
    val_path: Path | None = None
    image_size: int = Field(32, ge=16, le=1024)
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    seed: int = 0
    max_samples: int | None = Field(None, ge=20)

    @model_validator(mode="after")
    def _paths_fit_source(self) -> "DataConfig":
        if self.source == "imagefolder" and self.path is None:
            raise ValueError("source 'imagefolder' needs `path` (a folder of class sub-folders)")
        if self.source == "digits" and (self.path or self.val_path):
            raise ValueError("source 'digits' takes no `path` or `val_path`")
        return self


@dataclass
class Dataset:
    train_x: torch.Tensor  # uint8 [N, 3, S, S]
    train_y: torch.Tensor  # int64 [N]
    val_x: torch.Tensor
    val_y: torch.Tensor
    classes: list[str]
    fingerprint: str  # changes when the images or the split change
    seed: int = 0  # seeds every stage's training and sampling

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])


def to_input(images: torch.Tensor, mean, std, size: int | None = None) -> torch.Tensor:
    """uint8 NCHW (or float in [0, 1]) -> float32 normalized model input, resized to `size`
    when given (a teacher may run at another resolution than the data is stored at)."""
    x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
    if size is not None and x.shape[-1] != size:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                                            antialias=size < x.shape[-1])
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def load_dataset(cfg: DataConfig) -> Dataset:
    """Load and split the data `cfg` describes; InputError (naming the key) if unusable."""
    if cfg.source == "digits":
        x, y, classes, source_id = _digits(cfg.image_size)
    else:
        x, y, classes, source_id = _image_folder(cfg.path, cfg.image_size, "data.path")
    if cfg.max_samples is not None and cfg.max_samples < len(y):
        keep = _split(y, cfg.max_samples / len(y), cfg.seed)[1]
        x, y = x[keep], y[keep]
    if cfg.val_path is not None:
        vx, vy, vclasses, val_id = _image_folder(cfg.val_path, cfg.image_size, "data.val_path")
        if vclasses != classes:
            raise InputError(f"data.val_path classes {vclasses} differ from data.path classes {classes}")
        train_x, train_y, val_x, val_y = x, y, vx, vy
        source_id += val_id
    else:
        train_idx, val_idx = _split(y, cfg.val_fraction, cfg.seed)
        train_x, train_y, val_x, val_y = x[train_idx], y[train_idx], x[val_idx], y[val_idx]
    if len(val_y) == 0 or len(train_y) == 0:
        raise InputError("data: the split leaves no training or no validation images")
    fingerprint = hashlib.sha256(
        (source_id + cfg.model_dump_json(exclude={"path", "val_path"})).encode()).hexdigest()
    return Dataset(train_x, train_y, val_x, val_y, classes, fingerprint, cfg.seed)


def _split(y: torch.Tensor, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split: (rest, fraction) index arrays, reproducible for `seed`."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    labels = y.numpy()
    stratify = labels if np.bincount(labels).min() >= 2 else None
    rest, part = train_test_split(idx, test_size=fraction, random_state=seed, stratify=stratify)
    return np.sort(rest), np.sort(part)


def _digits(size: int):
    import sklearn
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8).repeat(1, 3, 1, 1)
    classes = [str(c) for c in digits.target_names]
    return x, torch.tensor(digits.target, dtype=torch.int64), classes, f"sklearn-digits-{sklearn.__version__}"


def _image_folder(root: Path, size: int, key: str):
    from PIL import Image, UnidentifiedImageError

    if not root.is_dir():
        raise InputError(f"{key}: {root} is not a directory")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(classes) < 2:
        raise InputError(f"{key}: {root} needs at least two class sub-folders, found {classes}")
    images, labels, listing = [], [], []
    for label, name in enumerate(classes):
        files = sorted(f for f in (root / name).rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(f"{key}: class folder {root / name} holds no images")
        for f in files:
            try:
                with Image.open(f) as im:
                    images.append(center_square(im.convert("RGB"), size))
            except (UnidentifiedImageError, OSError) as e:
                raise InputError(f"{key}: cannot read image {f}: {e}") from e
            labels.append(label)
            stat = f.stat()
            listing.append((f.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    source_id = hashlib.sha256(json.dumps(listing).encode()).hexdigest()
    return x, torch.tensor(labels, dtype=torch.int64), classes, source_id
