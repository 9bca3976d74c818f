"""Datasets: sklearn's digits (ships with scikit-learn), a folder of class sub-folders,
WebDataset shards, or MNIST-style IDX files.

Images are uint8 NCHW at the configured size, held in memory, or for a large training split
left on disk and decoded batch by batch (data/image_files.py, data/shards.py); models
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
from edgekiln.data import idx_files, index_cache, shards
from edgekiln.data.config import DataConfig
from edgekiln.data.image_files import ImageFiles, default_workers
from edgekiln.errors import InputError
from edgekiln.system.files import content_digest

# An image folder whose training split would take more than this decoded is streamed from
# disk unless `[data] streaming` says otherwise (about 14,000 images at 224 px).
STREAM_ABOVE_BYTES = 2 * 1024**3
# Below this many images, decoding in this process beats starting worker processes.
_WORKERS_ABOVE = 2000


@dataclass
class Dataset:
    train_x: torch.Tensor | ImageFiles | shards.ShardImages  # uint8 [N, 3, S, S], or decoded batch by batch
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
    # Shards: the training indices shard by shard, and the shuffle buffer an epoch's order is
    # drawn through (whether the images are streamed or in memory); None: a random permutation.
    shard_layout: list | None = None
    shuffle_buffer: int = 0
    skipped: list[str] = field(default_factory=list)  # hidden files and folders the data folders hold, not read
    # [data] unlabelled_path's or unlabelled_shards' images (data/unlabelled.py), and their
    # record for the manifest
    unlabelled_x: torch.Tensor | ImageFiles | shards.ShardImages | None = None
    unlabelled: dict | None = None

    @property
    def streamed(self) -> bool:
        return not isinstance(self.train_x, torch.Tensor)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])

    @property
    def has_test(self) -> bool:
        return self.test_y is not None and len(self.test_y) > 0

    def epoch_order(self, generator: torch.Generator) -> torch.Tensor:
        """The order of the training images in an epoch, drawn from `generator`."""
        if self.shard_layout is None:
            return torch.randperm(len(self.train_y), generator=generator)
        return shards.epoch_order(self.shard_layout, self.shuffle_buffer, generator)

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

    x: torch.Tensor | ImageFiles | shards.ShardImages
    y: torch.Tensor
    ids: list
    classes: list[str]
    source_id: str
    root: str  # the config key the ids are relative to ("digits" for the bundled data)
    skipped: list[str] = field(default_factory=list)  # hidden files and folders not read

    def take(self, idx) -> "_Pool":
        idx = np.asarray(idx, dtype=np.int64)
        x = self.x[torch.as_tensor(idx)] if isinstance(self.x, torch.Tensor) else self.x.subset(idx)
        return dataclasses.replace(self, x=x, y=self.y[torch.as_tensor(idx)], ids=[self.ids[i] for i in idx])

    def decoded(self, workers: int) -> "_Pool":
        """This pool with its images in memory."""
        if isinstance(self.x, torch.Tensor):
            return self
        return dataclasses.replace(self, x=self.x.load(workers if len(self.ids) > _WORKERS_ABOVE else 0))

    def members(self) -> dict:
        return {"root": self.root, "count": len(self.ids), "members": list(self.ids)}


def load_dataset(cfg: DataConfig, index_dir: Path | None = None) -> Dataset:
    """Load and split the data `cfg` describes; InputError (naming the key) if unusable.
    `index_dir`: where indexes of image folders and shards are kept between runs.

    The test split is carved first (stratified, seeded), then val from what is left, so val
    and test are `val_fraction` and `test_fraction` of all the images and never overlap.
    A split given as its own folder or shards is taken whole."""
    workers = default_workers() if cfg.num_workers is None else cfg.num_workers
    folder_options = {"max_pixels": cfg.max_image_pixels, "follow_symlinks": cfg.follow_symlinks}
    if cfg.source == "webdataset":
        pool, given_val, test = _shard_pools(cfg, index_dir)
    elif cfg.source == "idx":
        (pool, test), given_val = _idx(cfg.path, cfg.image_size, cfg.classes), None
    else:
        pool = _digits(cfg.image_size) if cfg.source == "digits" else \
            _image_folder(cfg.path, cfg.image_size, "data.path", index_dir, order=cfg.classes, **folder_options)
        given_val = None if cfg.val_path is None else \
            _image_folder(cfg.val_path, cfg.image_size, "data.val_path", index_dir, order=cfg.classes,
                          **folder_options)
        test = None if cfg.test_path is None else \
            _image_folder(cfg.test_path, cfg.image_size, "data.test_path", index_dir, order=cfg.classes,
                          **folder_options)
        for other, key in ((given_val, "data.val_path"), (test, "data.test_path")):
            if other is not None:
                _same_classes(other, pool, key)
    if cfg.max_samples is not None and cfg.max_samples < len(pool.y):
        pool = pool.take(_split(pool.y, cfg.max_samples / len(pool.y), cfg.seed)[1])
    source_id = pool.source_id + "".join(p.source_id for p in (test, given_val) if p is not None)
    skipped = pool.skipped + [s for p in (given_val, test) if p is not None for s in p.skipped]
    carve_test = test is None and cfg.source != "webdataset" and cfg.test_fraction > 0
    if carve_test:
        rest, held = _split(pool.y, cfg.test_fraction, cfg.seed, "data.test_fraction")
        pool, test = pool.take(rest), pool.take(held)
    if given_val is not None:
        train, val = pool, given_val
    else:
        # val_fraction is of all the images: of what the test split left, a larger share.
        carved = cfg.test_fraction if carve_test else 0.0
        rest, held = _split(pool.y, cfg.val_fraction / (1.0 - carved), cfg.seed, "data.val_fraction")
        train, val = pool.take(rest), pool.take(held)
    if len(val.y) == 0 or len(train.y) == 0:
        raise InputError("data: the split leaves no training or no validation images")
    layout = train.x.layout() if isinstance(train.x, shards.ShardImages) else None
    stream = cfg.streaming if cfg.streaming is not None else len(train.ids) * 3 * cfg.image_size**2 > STREAM_ABOVE_BYTES
    train = train if stream else train.decoded(workers)
    val, test = val.decoded(workers), None if test is None else test.decoded(workers)
    # How the images are read changes nothing a stage computes: not part of the fingerprint.
    if cfg.unlabelled_path is not None:  # what a distilled student depends on, listed like a calibration folder
        from edgekiln.calibration import folder_fingerprint

        source_id += json.dumps(folder_fingerprint(cfg.unlabelled_path))
    if cfg.unlabelled_shards is not None:
        source_id += shards.fingerprint_of(shards.expand(cfg.unlabelled_shards, "data.unlabelled_shards"))
    fingerprint = hashlib.sha256((source_id + cfg.model_dump_json(
        exclude={"path", "val_path", "test_path", "unlabelled_path", "unlabelled_shards", "shards", "val_shards",
                 "test_shards", "streaming", "num_workers", "max_image_pixels", "follow_symlinks"})).encode()).hexdigest()
    splits = {"source": cfg.source, "seed": cfg.seed, "train_count": len(train.ids),
              "val": val.members(), "test": None if test is None else test.members()}
    data = Dataset(train.x, train.y, val.x, val.y, pool.classes, fingerprint, cfg.seed,
                   test_x=None if test is None else test.x, test_y=None if test is None else test.y,
                   splits=splits, workers=workers if stream else 0, shard_layout=layout,
                   shuffle_buffer=cfg.shuffle_buffer, skipped=skipped)
    if cfg.unlabelled_path is not None:
        from edgekiln.data import unlabelled

        folders = {"data.path": cfg.path, "data.val_path": cfg.val_path, "data.test_path": cfg.test_path}
        data = unlabelled.attach(data, cfg.unlabelled_path, cfg.image_size, folders, workers)
    if cfg.unlabelled_shards is not None:
        from edgekiln.data import unlabelled

        data = unlabelled.attach_shards(data, cfg.unlabelled_shards, cfg.image_size, index_dir, workers)
    return data


def _shard_pools(cfg: DataConfig, index_dir: Path | None) -> tuple[_Pool, _Pool, _Pool | None]:
    """The training, validation and (if given) test shards, with one list of class names."""
    given = [("data.shards", cfg.shards), ("data.val_shards", cfg.val_shards), ("data.test_shards", cfg.test_shards)]
    indexes = [(key, shards.index(shards.expand(spec, key), key, index_dir)) for key, spec in given if spec]
    top = max(max((max(labels) for labels in found.labels if labels), default=0) for _, found in indexes)
    if cfg.classes is not None and top >= len(cfg.classes):
        raise InputError(f"data.classes names {len(cfg.classes)} classes; the shards hold labels up to {top}")
    classes = cfg.classes or [str(i) for i in range(top + 1)]
    if len(classes) < 2:
        raise InputError(f"data.shards: the shards hold one class ({classes[0]}); a classifier needs two or more")
    pools = []
    for key, found in indexes:
        images = shards.ShardImages(found, cfg.image_size, key)
        ids = [f"{Path(url).name}/{k}" for url, keys in zip(found.urls, found.keys) for k in keys]
        labels = torch.tensor([y for per_shard in found.labels for y in per_shard], dtype=torch.int64)
        pools.append(_Pool(images, labels, ids, classes, found.fingerprint, key))
    return pools[0], pools[1], pools[2] if len(pools) > 2 else None


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


def _idx(root: Path, size: int, classes: list[str] | None) -> tuple[_Pool, _Pool | None]:
    """The train files of an IDX dataset folder, and its t10k files (the official test split)
    when there. Grey images, resized to `size` and repeated to three channels."""
    pools = []
    for split in ("train", "test"):
        found = idx_files.read_split(root, split, "data.path")
        if found is None:
            pools.append(None)
            continue
        images, labels = found
        top = int(labels.max())
        if classes is not None and top >= len(classes):
            raise InputError(f"data.classes names {len(classes)} classes; {root} holds labels up to {top}")
        x = torch.from_numpy(images.copy())[:, None].float() / 255.0
        if x.shape[-1] != size or x.shape[-2] != size:
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                                                antialias=size < images.shape[-1])
        x = (x.clamp(0, 1) * 255).round().to(torch.uint8).repeat(1, 3, 1, 1)
        digest = hashlib.sha256(images.tobytes())
        digest.update(labels.tobytes())
        pools.append(_Pool(x, torch.from_numpy(labels), [f"{idx_files.SPLITS[split]}:{i}" for i in range(len(labels))],
                           [], digest.hexdigest(), "data.path"))
    train, test = pools
    top = max(int(p.y.max()) for p in pools if p is not None)
    names = classes or [str(i) for i in range(top + 1)]
    if len(names) < 2:
        raise InputError(f"data.path: {root} holds one class; a classifier needs two or more")
    return dataclasses.replace(train, classes=names), None if test is None else dataclasses.replace(test, classes=names)


def _content_id(root: Path, listing: list[tuple[str, int, int]], index_dir: Path | None) -> str:
    """The folder's identity in the data fingerprint: its images' names and content hashes
    (not their times or where the folder is: a fresh checkout of the same images keys the
    same). Hashed once per listing of names, sizes and times when `index_dir` keeps the index."""
    seen = "content-" + hashlib.sha256(json.dumps([str(root.resolve()), listing]).encode()).hexdigest()
    known = index_cache.read(index_dir, seen)
    if known is not None:
        return known["source_id"]
    contents = [(name, size, content_digest(root / name)) for name, size, _ in listing]
    source_id = hashlib.sha256(json.dumps(contents).encode()).hexdigest()
    index_cache.write(index_dir, seen, {"source_id": source_id})
    return source_id


def _image_folder(root: Path, size: int, key: str, index_dir: Path | None = None, max_pixels: int | None = None,
                  follow_symlinks: bool = False, order: list[str] | None = None) -> _Pool:
    """The folder's images as files (decoded later, all at once or batch by batch): each
    file's header is read, so an unreadable or oversized file stops the run before any work;
    once per listing (names, sizes, times) when `index_dir` keeps the index. Hidden files and
    folders (a name starting with ".") are skipped and listed in the pool's `skipped`; a
    symlink that leaves the folder is refused unless `follow_symlinks`. Classes are numbered
    in sorted order, or in `order` (data.classes), which must name exactly the class folders."""
    if not root.is_dir():
        raise InputError(f"{key}: {root} is not a directory")
    skipped: list[str] = []
    classes = []
    for d in sorted(root.iterdir()):
        if d.name.startswith("."):
            skipped.append(d.name + ("/" if d.is_dir() else ""))
        elif d.is_dir():
            _inside_or_allowed(d, root, key, follow_symlinks)
            classes.append(d.name)
    if len(classes) < 2:
        raise InputError(f"{key}: {root} needs at least two class sub-folders, found {classes}")
    if order is not None:
        if sorted(order) != classes:
            raise InputError(f"data.classes must name exactly the class folders of {key} {root}: it names "
                             f"{sorted(set(order) - set(classes)) or 'none'} that are not there and leaves out "
                             f"{sorted(set(classes) - set(order)) or 'none'}")
        classes = list(order)
    labels, listing = [], []
    for label, name in enumerate(classes):
        files = []
        for f in sorted((root / name).rglob("*")):
            relative = f.relative_to(root)
            if any(part.startswith(".") for part in relative.parts):
                if not any(part.startswith(".") for part in relative.parent.parts):  # once, not per file inside
                    skipped.append(relative.as_posix() + ("/" if f.is_dir() else ""))
                continue
            if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file():
                _inside_or_allowed(f, root, key, follow_symlinks)
                files.append(f)
        if not files:
            raise InputError(f"{key}: class folder {root / name} holds no images")
        for f in files:
            labels.append(label)
            stat = f.stat()
            listing.append((f.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns))
    files = [entry[0] for entry in listing]
    source_id = _content_id(root, listing, index_dir)
    checked = f"folder-{source_id}-{max_pixels}"
    if index_cache.read(index_dir, checked) is None:
        for f in files:
            check_image_header(root / f, max_pixels, key)
        index_cache.write(index_dir, checked, {"root": str(root), "images": len(files)})
    return _Pool(ImageFiles(root, files, size, key), torch.tensor(labels, dtype=torch.int64), files, classes,
                 source_id, key, skipped=[f"{key}: {s}" for s in skipped])


def check_image_header(path: Path, max_pixels: int | None, key: str) -> None:
    """Read `path`'s header only (cheap): InputError naming the file when it is not an image
    or has more than `max_pixels` pixels ([data] max_image_pixels), before anything decodes it."""
    from PIL import Image, UnidentifiedImageError

    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # the size is judged here, against the config's
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f"{key}: cannot read image {path}: {e}") from e
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    if max_pixels is not None and width * height > max_pixels:
        raise InputError(f"{key}: image {path} is {width}x{height} ({width * height:,} pixels), over "
                         f"data.max_image_pixels = {max_pixels:,}: shrink it, remove it, or raise the limit")


def _inside_or_allowed(path: Path, root: Path, key: str, follow_symlinks: bool) -> None:
    """InputError when `path` (a class folder or an image under `root`) is a link to
    somewhere outside `root`, unless the config follows such links. Only a link can lead out:
    the walk below a class folder does not enter linked folders."""
    if follow_symlinks or not path.is_symlink():
        return
    target = path.resolve()
    if not target.is_relative_to(root.resolve()):
        raise InputError(f"{key}: {path} links to {target}, outside {root}: set data.follow_symlinks = true to "
                         "read images through links that leave the data folder")
