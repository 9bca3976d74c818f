"""A split's images left on disk: a list of files that indexes like a uint8 [N, 3, S, S]
tensor and decodes only what is asked for, and the batch iterator the training loops read
through, which decodes in DataLoader worker processes when the images are files.

A folder of tens of thousands of 224 px images does not fit in memory decoded (150 KB each);
streamed, the memory a run needs no longer grows with the number of training images.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from edgekiln.calibration.images import read_square
from edgekiln.errors import InputError


class ImageFiles:
    """Images under `root` (paths relative to it) at `size` px, decoded on demand. `x[i]`
    is one uint8 [3, S, S] tensor; `x[indices]` and `x[a:b]` a stacked uint8 batch."""

    dtype = torch.uint8

    def __init__(self, root: Path, files: list[str], size: int, key: str = "data.path"):
        self.root, self.files, self.size, self.key = Path(root), list(files), int(size), key

    def __len__(self) -> int:
        return len(self.files)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.files), 3, self.size, self.size)

    def decode(self, i: int) -> torch.Tensor:
        """Image `i` as the models see it (square, RGB, uint8 CHW); InputError naming the file."""
        try:
            array = read_square(self.root / self.files[i], self.size)
        except ValueError as e:
            raise InputError(f"{self.key}: {e}") from None
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))  # CHW, one writable copy

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, (int, np.integer)):
            return self.decode(int(index))
        if isinstance(index, slice):
            index = range(*index.indices(len(self)))
        elif isinstance(index, torch.Tensor):
            index = index.tolist()
        return torch.stack([self.decode(int(i)) for i in index]) if len(index) else \
            torch.zeros((0, 3, self.size, self.size), dtype=torch.uint8)

    def subset(self, indices: Iterable[int]) -> "ImageFiles":
        """The images at `indices`, still on disk."""
        return ImageFiles(self.root, [self.files[int(i)] for i in indices], self.size, self.key)

    def load(self, workers: int = 0) -> torch.Tensor:
        """Every image decoded into one uint8 tensor (the val and test splits, read whole by
        every evaluation), in `workers` processes."""
        out = torch.empty(self.shape, dtype=torch.uint8)  # filled in place: no second copy at the end
        order = torch.arange(len(self))
        index_batches = [order[i:i + 256] for i in range(0, len(self), 256)]
        for idx, batch in zip(index_batches, batches(self, index_batches, workers)):
            out[idx] = batch
        return out


class SampleAugment:
    """A PIL augmentation (timm's RandAugment) applied to one image at a time, its random
    draws seeded by (seed, epoch, the image's index): the same images come out whichever
    process applies it (a decoding worker, the training process, any rank), so streamed
    and in-memory training, and one or several ranks, stay the same."""

    def __init__(self, transform, seed: int, epoch: int = 0):
        self.transform, self.seed, self.epoch = transform, int(seed), int(epoch)

    def for_epoch(self, epoch: int) -> "SampleAugment":
        return SampleAugment(self.transform, self.seed, epoch)

    def __call__(self, image: torch.Tensor, index: int) -> torch.Tensor:
        """One uint8 CHW image, augmented. Reseeds `random` and numpy's global generator
        (what timm draws from): `batch` keeps the caller's."""
        from PIL import Image

        sample_seed = ((self.seed * 1_000_003 + self.epoch) * 10_000_019 + int(index)) % 2**63
        random.seed(sample_seed)
        np.random.seed(sample_seed % 2**32)
        out = np.asarray(self.transform(Image.fromarray(image.permute(1, 2, 0).numpy())))
        return torch.from_numpy(out).permute(2, 0, 1).contiguous()

    def batch(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """A uint8 NCHW batch of the images at `indices`, augmented, in this process."""
        saved = random.getstate(), np.random.get_state()
        try:
            return torch.stack([self(image, int(i)) for image, i in zip(images, indices)])
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])


class _Decoded(torch.utils.data.Dataset):
    def __init__(self, images: ImageFiles, augment: SampleAugment | None):
        self.images, self.augment = images, augment

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        image = self.images.decode(i)
        return image if self.augment is None else self.augment(image, i)


def default_workers() -> int:
    """Decoding processes when `[data] num_workers` is unset: one per core but one, up to 8."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def batches(images, index_batches: list[torch.Tensor], workers: int = 0,
            augment: SampleAugment | None = None) -> Iterator[torch.Tensor]:
    """The uint8 images of each batch of indices, in order, augmented by `augment` if given.
    Tensors are indexed in memory; ImageFiles are decoded (and augmented) by `workers`
    DataLoader processes (0: in this one), a few batches ahead of the training step that
    reads them; shards (data/shards.py) read every batch in one pass over them."""
    if not hasattr(images, "batches") and not isinstance(images, torch.Tensor) and workers > 0:
        yield from torch.utils.data.DataLoader(
            _Decoded(images, augment), batch_sampler=[idx.tolist() for idx in index_batches], num_workers=workers,
            collate_fn=torch.stack, prefetch_factor=4, multiprocessing_context=_worker_context())
        return
    read = images.batches(index_batches, workers) if hasattr(images, "batches") else \
        (images[idx] for idx in index_batches)
    for idx, batch in zip(index_batches, read):
        yield batch if augment is None else augment.batch(batch, idx)


def _worker_context():
    """Workers start from a fork server that has imported this module and nothing else: a
    plain fork of the training process would copy the threads of whatever it has imported
    (JAX, pulled in by the TFLite converter in the pre-check, deadlocks in a forked child)."""
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context
