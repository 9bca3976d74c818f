"""Datasets: sklearn's digits (ships with scikit-learn) or a folder of class sub-folders.

Images are uint8 NCHW at the configured size, held in memory, or for a large folder's
training split left on disk and decoded batch by batch (stages/image_files.py); models
normalize them with their own mean/std (see `to_input`). Three disjoint splits, deterministic for a seed:
train (fitting), val (every decision: selection, gates inside stages, searches) and test
(held out: only the final grading sees it; stages get a view without it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch


from edgekiln.calibration.images import IMAGE_SUFFIXES
from edgekiln.stages.config import DataConfig
from edgekiln.stages.errors import InputError
from edgekiln.stages.image_files import ImageFiles, default_workers

# An image folder whose training split would take more than this decoded is streamed from
# disk unless `[data] streaming` says otherwise (about 14,000 images at 224 px).
STREAM_ABOVE_BYTES = 2 * 1024**3
# Below this many images, decoding in this process beats starting worker processes.
_WORKERS_ABOVE = 2000


@dataclass
class Dataset:
    train_x: torch.Tensor | ImageFiles  # uint8 [N, 3, S, S], or files decoded batch by batch
    train_y: torch.Tensor  # int64 [N]
    val_x: torch.Tensor
    val_y: torch.Tensor
    classes: list[str]
    fingerprint: str  # changes when the images or the split change
    seed: int = 0  # seeds every stage's training and sampling
    test_x: torch.Tensor | None = None  # None: no test split, or a stage's view (see `for_stages`)
    test_y: torch.Tensor | None = None
    # Members of each split, so anyone can re-evaluate on exactly these images (splits.json).
    splits: dict = field(default_factory=dict)
    workers: int = 0  # processes that decode streamed training images

    @property
    def streamed(self) -> bool:
        return isinstance(self.train_x, ImageFiles)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])

    @property
    def has_test(self) -> bool:
        return self.test_y is not None and len(self.test_y) > 0

    def for_stages(self) -> "Dataset":
        """The data every stage decides on: train and val, and no test images at all."""
        return dataclasses.replace(self, test_x=None, test_y=None)


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


@dataclass
class _Pool:
    """Images from one source, with an id per image: a sample index (digits) or a file path
    relative to `root` (folders), as splits.json lists them."""

    x: torch.Tensor | ImageFiles
    y: torch.Tensor
    ids: list
    classes: list[str]
    source_id: str
    root: str  # the config key the ids are relative to ("digits" for the bundled data)

    def take(self, idx) -> "_Pool":
        idx = np.asarray(idx, dtype=np.int64)
        x = self.x.subset(idx) if isinstance(self.x, ImageFiles) else self.x[torch.as_tensor(idx)]
        return dataclasses.replace(self, x=x, y=self.y[torch.as_tensor(idx)], ids=[self.ids[i] for i in idx])

    def decoded(self, workers: int) -> "_Pool":
        """This pool with its images in memory."""
        if not isinstance(self.x, ImageFiles):
            return self
        return dataclasses.replace(self, x=self.x.load(workers if len(self.ids) > _WORKERS_ABOVE else 0))

    def members(self) -> dict:
        return {"root": self.root, "count": len(self.ids), "members": list(self.ids)}


def load_dataset(cfg: DataConfig) -> Dataset:
    """Load and split the data `cfg` describes; InputError (naming the key) if unusable.

    The test split is carved first (stratified, seeded), then val from what is left, so val
    and test are `val_fraction` and `test_fraction` of all the images and never overlap."""
    workers = default_workers() if cfg.num_workers is None else cfg.num_workers
    pool = _digits(cfg.image_size) if cfg.source == "digits" else _image_folder(cfg.path, cfg.image_size, "data.path")
    if cfg.max_samples is not None and cfg.max_samples < len(pool.y):
        pool = pool.take(_split(pool.y, cfg.max_samples / len(pool.y), cfg.seed)[1])
    source_id, test = pool.source_id, None
    if cfg.test_path is not None:
        test = _image_folder(cfg.test_path, cfg.image_size, "data.test_path")
        _same_classes(test, pool, "data.test_path")
        source_id += test.source_id
    elif cfg.test_fraction > 0:
        rest, held = _split(pool.y, cfg.test_fraction, cfg.seed, "data.test_fraction")
        pool, test = pool.take(rest), pool.take(held)
    if cfg.val_path is not None:
        train, val = pool, _image_folder(cfg.val_path, cfg.image_size, "data.val_path")
        _same_classes(val, pool, "data.val_path")
        source_id += val.source_id
    else:
        # val_fraction is of all the images: of what the test split left, a larger share.
        carved = cfg.test_fraction if (cfg.test_path is None and test is not None) else 0.0
        rest, held = _split(pool.y, cfg.val_fraction / (1.0 - carved), cfg.seed, "data.val_fraction")
        train, val = pool.take(rest), pool.take(held)
    if len(val.y) == 0 or len(train.y) == 0:
        raise InputError("data: the split leaves no training or no validation images")
    stream = cfg.streaming if cfg.streaming is not None else len(train.ids) * 3 * cfg.image_size**2 > STREAM_ABOVE_BYTES
    train = train if stream else train.decoded(workers)
    val, test = val.decoded(workers), None if test is None else test.decoded(workers)
    # How the images are read changes nothing a stage computes: not part of the fingerprint.
    fingerprint = hashlib.sha256((source_id + cfg.model_dump_json(
        exclude={"path", "val_path", "test_path", "streaming", "num_workers"})).encode()).hexdigest()
    splits = {"source": cfg.source, "seed": cfg.seed, "train_count": len(train.ids),
              "val": val.members(), "test": None if test is None else test.members()}
    return Dataset(train.x, train.y, val.x, val.y, pool.classes, fingerprint, cfg.seed,
                   test_x=None if test is None else test.x, test_y=None if test is None else test.y,
                   splits=splits, workers=workers if stream else 0)


def _same_classes(other: _Pool, pool: _Pool, key: str) -> None:
    if other.classes != pool.classes:
        raise InputError(f"{key} classes {other.classes} differ from data.path classes {pool.classes}")


def _split(y: torch.Tensor, fraction: float, seed: int, key: str = "data") -> tuple[np.ndarray, np.ndarray]:
    """Stratified split: (rest, fraction) index arrays, reproducible for `seed`."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    labels = y.numpy()
    stratify = labels if np.bincount(labels).min() >= 2 else None
    try:
        rest, part = train_test_split(idx, test_size=fraction, random_state=seed, stratify=stratify)
    except ValueError as e:  # too few images to give every class a place in both parts
        raise InputError(f"{key}: cannot split {len(y)} images: {e}") from None
    return np.sort(rest), np.sort(part)


def _digits(size: int) -> _Pool:
    import sklearn
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8).repeat(1, 3, 1, 1)
    classes = [str(c) for c in digits.target_names]
    return _Pool(x, torch.tensor(digits.target, dtype=torch.int64), list(range(len(digits.target))), classes,
                 f"sklearn-digits-{sklearn.__version__}", "digits")


def _image_folder(root: Path, size: int, key: str) -> _Pool:
    """The folder's images as files (decoded later, all at once or batch by batch): each
    file's header is read here, so an unreadable file stops the run before any work."""
    from PIL import Image, UnidentifiedImageError

    if not root.is_dir():
        raise InputError(f"{key}: {root} is not a directory")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(classes) < 2:
        raise InputError(f"{key}: {root} needs at least two class sub-folders, found {classes}")
    labels, listing = [], []
    for label, name in enumerate(classes):
        files = sorted(f for f in (root / name).rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(f"{key}: class folder {root / name} holds no images")
        for f in files:
            try:
                with Image.open(f):  # the header only: cheap, and catches what is not an image
                    pass
            except (UnidentifiedImageError, OSError) as e:
                raise InputError(f"{key}: cannot read image {f}: {e}") from e
            labels.append(label)
            stat = f.stat()
            listing.append((f.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns))
    files = [entry[0] for entry in listing]
    source_id = hashlib.sha256(json.dumps(listing).encode()).hexdigest()
    return _Pool(ImageFiles(root, files, size, key), torch.tensor(labels, dtype=torch.int64), files, classes,
                 source_id, key)
