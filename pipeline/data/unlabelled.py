"""Unlabelled images for distillation (`[data] unlabelled_path`): a folder of images in any
layout, labels ignored. They join the training images of the loops that have a teacher
(distillation, pruning recovery) with the KD term only: their label is NO_LABEL, which the
hard loss ignores. They never enter val or test, and a file that is also a val or test image
(the folder overlaps the labelled data) is left out and counted."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from edgekiln.data.image_files import ImageFiles

NO_LABEL = -100  # torch's cross_entropy ignore_index: the hard loss skips these images
KEY = "data.unlabelled_path"


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
    from edgekiln.data.dataset import STREAM_ABOVE_BYTES

    large = len(kept) * 3 * size**2 > STREAM_ABOVE_BYTES  # read batch by batch, like a large training split
    images = files if data.streamed or large else files.load(workers)
    record = {"path": str(root), "images": len(kept), "left_out": len(paths) - len(kept),
              "why_left_out": "also val or test images" if len(paths) != len(kept) else None,
              "used_by": "distillation and pruning recovery, KD term only"}
    return dataclasses.replace(data, unlabelled_x=images, unlabelled=record)


def joined(data):
    """The training split for a loop that has a teacher: labelled images, then the unlabelled
    ones labelled NO_LABEL. `data` itself where there are none."""
    extra = data.unlabelled_x
    if extra is None:
        return data
    labels = torch.cat([data.train_y, torch.full((len(extra),), NO_LABEL, dtype=data.train_y.dtype)])
    if isinstance(data.train_x, torch.Tensor) and isinstance(extra, torch.Tensor):
        images = torch.cat([data.train_x, extra])
    elif isinstance(data.train_x, torch.Tensor):  # labelled in memory, many unlabelled files on disk
        images = InMemoryThenFiles(data.train_x, extra)
    else:  # streamed: one list of files from the file system's root
        train = data.train_x
        images = ImageFiles(Path("/"), [(train.root / f).resolve().as_posix().lstrip("/") for f in train.files]
                            + list(extra.files), train.size, key=train.key)
    return dataclasses.replace(data, train_x=images, train_y=labels, unlabelled_x=None)


class InMemoryThenFiles:
    """The labelled images held in memory, then unlabelled ones decoded on demand: indexed
    and decoded like ImageFiles (data/image_files.py batches), so training streams the files."""

    dtype = torch.uint8

    def __init__(self, first: torch.Tensor, files: ImageFiles):
        self.first, self.files = first, files

    def __len__(self) -> int:
        return len(self.first) + len(self.files)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self), *self.first.shape[1:])

    def decode(self, i: int) -> torch.Tensor:
        return self.first[i] if i < len(self.first) else self.files.decode(i - len(self.first))

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, (int, np.integer)):
            return self.decode(int(index))
        index = torch.as_tensor(index if not isinstance(index, slice) else range(*index.indices(len(self))))
        return torch.stack([self.decode(int(i)) for i in index])
