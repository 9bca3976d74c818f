"""Unlabelled images for distillation: `[data] unlabelled_path`, a folder of images in any
layout, or `unlabelled_shards`, WebDataset shards without labels. They join the training
images of the loops that have a teacher (distillation, pruning recovery) with the KD term
only: their label is NO_LABEL, which the hard loss ignores. They never enter val or test: a
file or shard sample that is also a val or test image (the folder or shards overlap the
labelled data) is left out and counted."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from edgekiln.data import shards
from edgekiln.data.image_files import ImageFiles, batches

NO_LABEL = -100  # torch's cross_entropy ignore_index: the hard loss skips these images
KEY = "data.unlabelled_path"
SHARDS_KEY = "data.unlabelled_shards"
USED_BY = "distillation and pruning recovery, KD term only"


def image_paths(root: Path) -> list[Path]:
    """Every image under `root` (nested folders allowed, hidden files and folders skipped), sorted."""
    from edgekiln.data.config import _images_in

    return sorted(_images_in(root, recursive=True))


def _held_out(splits: dict, folders: dict[str, Path | None]) -> set[Path]:
    """The val and test images that are files of an image folder, resolved (`folders`: the
    config key a split's members are relative to -> that folder)."""
    out = set()
    for name in ("val", "test"):
        split = splits.get(name) or {}
        folder = folders.get(split.get("root"))
        if folder is not None:
            out.update((Path(folder) / str(member)).resolve() for member in split["members"])
    return out


def attach(data, root: Path, size: int, folders: dict[str, Path | None], workers: int = 0):
    """`data` with the unlabelled images under `root` at `size` px: decoded now when the
    training images are in memory, else streamed like them; `folders` as in _held_out. Their
    record (path, images, left out and why) goes into `data.unlabelled`."""
    held_out = _held_out(data.splits, folders)
    paths = image_paths(root)
    kept = [p for p in paths if p.resolve() not in held_out]
    files = ImageFiles(Path("/"), [p.resolve().as_posix().lstrip("/") for p in kept], size, key=KEY)
    return _attached(data, files, KEY, {"path": str(root)}, len(paths), workers)


def attach_shards(data, spec: str | list[str], size: int, index_dir: Path | None = None, workers: int = 0):
    """`data` with the images of the WebDataset shards `spec` (labels ignored) at `size` px,
    like `attach`: a sample that is also a val or test sample (the same shard file name and
    key, as splits.json lists them) is left out."""
    urls = shards.expand(spec, SHARDS_KEY)
    found = shards.index(urls, SHARDS_KEY, index_dir, labelled=False)
    held_out = {str(member) for name in ("val", "test") for member in ((data.splits.get(name) or {}).get("members")
                                                                      or [])}
    ids = [f"{Path(url).name}/{k}" for url, keys in zip(found.urls, found.keys) for k in keys]
    kept = np.array([i for i, member in enumerate(ids) if member not in held_out], dtype=np.int64)
    images = shards.ShardImages(found, size, SHARDS_KEY, positions=kept)
    return _attached(data, images, SHARDS_KEY, {"shards": spec, "shard_files": len(urls)}, len(ids), workers)


def _attached(data, images, key: str, where: dict, found: int, workers: int):
    """`data` with `images` (`found` of them before some were left out) as its unlabelled
    set: decoded into memory when the training images are there and these would fit."""
    from edgekiln.data.dataset import STREAM_ABOVE_BYTES
    from edgekiln.errors import InputError

    if len(images) == 0:
        raise InputError(f"{key}: every one of its {found} images is also a val or test image")
    large = len(images) * 3 * images.shape[-1] ** 2 > STREAM_ABOVE_BYTES  # read batch by batch, like a large split
    held = images if data.streamed or large else images.load(workers)
    record = {**where, "images": len(images), "left_out": found - len(images),
              "why_left_out": "also val or test images" if found != len(images) else None, "used_by": USED_BY}
    return dataclasses.replace(data, unlabelled_x=held, unlabelled=record)


def joined(data):
    """The training split for a loop that has a teacher: labelled images, then the unlabelled
    ones labelled NO_LABEL. `data` itself where there are none. When either part is read from
    shards, an epoch's order keeps to a sequential reader (`Concatenated.layout`)."""
    extra = data.unlabelled_x
    if extra is None:
        return data
    labels = torch.cat([data.train_y, torch.full((len(extra),), NO_LABEL, dtype=data.train_y.dtype)])
    train = data.train_x
    if isinstance(train, torch.Tensor) and isinstance(extra, torch.Tensor):
        images = torch.cat([train, extra])
    elif isinstance(train, ImageFiles) and isinstance(extra, ImageFiles):  # one list of files, decoded by workers
        images = ImageFiles(Path("/"), [(train.root / f).resolve().as_posix().lstrip("/") for f in train.files]
                            + list(extra.files), train.size, key=train.key)
    else:  # in memory, files or shards, one after the other
        images = Concatenated([train, extra])
    layout = None
    if data.shard_layout is not None or isinstance(extra, shards.ShardImages):
        layout = _layout([train, extra], data.shard_layout)
    return dataclasses.replace(data, train_x=images, train_y=labels, unlabelled_x=None, shard_layout=layout)


def _layout(parts: list, first_layout: list | None) -> list[np.ndarray]:
    """The indices of `parts` one after the other, as shards.epoch_order reads them: a shard
    part's own shards (the first part's given layout, if any), and any other part cut into
    runs of about a shard's length (read in any order, they need no buffer but mix with the
    shards through it)."""
    out, start = [], 0
    own = [first_layout] + [p.layout() if isinstance(p, shards.ShardImages) else None for p in parts[1:]]
    lengths = [len(run) for runs in own if runs for run in runs]
    run = max(1, int(np.mean(lengths))) if lengths else 256
    for part, runs in zip(parts, own):
        if runs is None:
            runs = [np.arange(i, min(i + run, len(part)), dtype=np.int64) for i in range(0, len(part), run)]
        out += [np.asarray(r, dtype=np.int64) + start for r in runs]
        start += len(part)
    return out


class Concatenated:
    """Image sets one after the other (a uint8 tensor, ImageFiles, ShardImages), indexed
    like one uint8 [N, 3, S, S] tensor. An epoch's batches are read part by part, each in
    its own way (data/image_files.batches): files by the worker processes, shards in one
    pass, and put back together in the batch's order."""

    dtype = torch.uint8

    def __init__(self, parts: list):
        self.parts = parts
        self.starts = np.cumsum([0, *(len(p) for p in parts)])

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self), *self.parts[0].shape[1:])

    def _of(self, index: torch.Tensor) -> np.ndarray:
        return np.searchsorted(self.starts, index.numpy(), side="right") - 1

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, (int, np.integer)):
            return self[torch.tensor([int(index)])][0]
        if isinstance(index, slice):
            index = torch.arange(len(self))[index]
        return next(self.batches([torch.as_tensor(index, dtype=torch.int64).reshape(-1)]))

    def batches(self, index_batches: list[torch.Tensor], workers: int = 0):
        """The images of each batch of indices, in order: every part reads its share of all
        the batches in one go (a shard part in one pass over its shards)."""
        index_batches = [torch.as_tensor(b, dtype=torch.int64) for b in index_batches]
        owner = [self._of(b) for b in index_batches]
        streams = []
        for p, part in enumerate(self.parts):
            wanted = [b[torch.from_numpy(o == p)] - int(self.starts[p]) for b, o in zip(index_batches, owner)]
            streams.append(batches(part, [w for w in wanted if len(w)], workers))
        for b, o in zip(index_batches, owner):
            out = torch.empty((len(b), *self.shape[1:]), dtype=torch.uint8)
            for p in np.unique(o).tolist():
                out[torch.from_numpy(o == p)] = next(streams[p])
            yield out
