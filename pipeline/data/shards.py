"""WebDataset shards: tar files of samples (`<key>.jpg` + `<key>.cls`, the usual layout of
data sets too large for a folder tree), read in sequence with the `webdataset` package, from
local paths or any URL it opens (`pipe:`, `https://`, `gs://` ...).

A shard list is read once to index it (each sample's key and label, and that its image
opens), cached by fingerprint; after that, every read goes through the shards in sequence:
a batch of arbitrary samples is read by passing over the shards that hold them, and an
epoch's order is drawn so that a sequential reader can serve it from a bounded buffer
(`epoch_order`: shards shuffled, then samples through a shuffle buffer).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import json
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from edgekiln import progress
from edgekiln.calibration.images import read_square
from edgekiln.data import index_cache
from edgekiln.data.config import expand_shards, local_shard
from edgekiln.errors import InputError

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "ppm", "tif", "tiff")
# Bumped when what an index records changes: older cached indexes are then rebuilt.
_INDEX_VERSION = 1


def expand(spec: str | list[str], key: str) -> list[str]:
    """Shard URLs from a brace pattern (`train-{000..099}.tar`) or a list of them;
    InputError naming `key` when there are none or a local one is missing."""
    urls = expand_shards(spec)
    if not urls:
        raise InputError(f"{key}: no shards")
    for url in urls:
        path = local_shard(url)
        if path is not None and not path.is_file():
            raise InputError(f"{key}: shard {url} is not a file")
    return urls


def _samples(url: str, key: str) -> Iterator[tuple[str, bytes, bytes | None]]:
    """(key, image bytes, label bytes or None) of each sample of one shard, in order."""
    from webdataset.tariterators import tarfile_samples

    try:
        for sample in tarfile_samples([{"url": url}]):
            image = next((sample[e] for e in IMAGE_EXTENSIONS if e in sample), None)
            if image is None:
                fields = sorted(k for k in sample if not k.startswith("__"))
                raise InputError(f"{key}: sample {sample['__key__']} of shard {url} has no image "
                                 f"({'/'.join(IMAGE_EXTENSIONS)}), only {fields}")
            yield sample["__key__"], image, sample.get("cls")
    except InputError:
        raise
    except Exception as e:  # a missing or truncated shard, a command that failed
        raise InputError(f"{key}: cannot read shard {url}: {e}") from None


@dataclass(frozen=True)
class ShardIndex:
    """What a shard list holds: per shard, its samples' keys and labels, in order."""

    urls: list[str]
    keys: list[list[str]]
    labels: list[list[int]]
    fingerprint: str  # changes when a shard changes (local shards: size and time; others: the URL)

    @property
    def counts(self) -> list[int]:
        return [len(k) for k in self.keys]


def fingerprint_of(urls: list[str]) -> str:
    """Changes when a shard changes (local shards: size and time; others: the URL)."""
    stats = []
    for url in urls:
        path = local_shard(url)
        stat = path.stat() if path is not None else None
        stats.append([url, None if stat is None else [stat.st_size, stat.st_mtime_ns]])
    return hashlib.sha256(json.dumps([_INDEX_VERSION, stats]).encode()).hexdigest()


def index(urls: list[str], key: str, index_dir: Path | None = None, labelled: bool = True) -> ShardIndex:
    """Read every shard once: each sample's key and label (`.cls`, an integer), and that its
    image opens. Cached in `index_dir` by the shards' fingerprint, so it is read once per
    change; remote shards are taken as immutable (their URL is their fingerprint).
    `labelled=False`: samples need no `.cls` (any is ignored); every label is -1."""
    from PIL import Image, UnidentifiedImageError

    fingerprint = fingerprint_of(urls)
    name = f"shards-{fingerprint}" if labelled else f"shards-unlabelled-{fingerprint}"
    cached = index_cache.read(index_dir, name)
    if cached is not None:
        return ShardIndex(urls, cached["keys"], cached["labels"], fingerprint)
    keys, labels = [], []
    with progress.status(f"indexing {len(urls)} shard(s) of {key}") as status:
        for n, url in enumerate(urls):
            keys.append([]), labels.append([])
            for sample_key, image, label in _samples(url, key):
                try:
                    with Image.open(io.BytesIO(image)):  # the header: catches what is not an image
                        pass
                    value = -1 if not labelled else int(label.decode().strip()) if label is not None else None
                except (UnidentifiedImageError, OSError) as e:
                    raise InputError(f"{key}: cannot read the image of sample {sample_key} in shard {url}: "
                                     f"{e}") from None
                except ValueError:
                    value = None
                if labelled and (value is None or value < 0):
                    raise InputError(f"{key}: sample {sample_key} of shard {url} has no class index "
                                     f"(a `.cls` member holding an integer >= 0)")
                keys[-1].append(sample_key), labels[-1].append(value)
            status.update(f"indexing shards of {key}: {n + 1}/{len(urls)}, {sum(map(len, keys))} samples")
    if not any(keys):
        raise InputError(f"{key}: the shards hold no samples")
    index_cache.write(index_dir, name, {"keys": keys, "labels": labels})
    return ShardIndex(urls, keys, labels, fingerprint)


def decode(image: bytes, size: int) -> torch.Tensor:
    """Encoded image bytes as the models see them: uint8 CHW, square, RGB."""
    return torch.from_numpy(np.ascontiguousarray(read_square(io.BytesIO(image), size).transpose(2, 0, 1)))


class ShardImages:
    """The images of some samples of a shard list at `size` px, left in the shards: indexes
    like a uint8 [N, 3, S, S] tensor (each access a pass over the shards it needs); an
    epoch's batches are read in one pass (`batches`)."""

    dtype = torch.uint8

    def __init__(self, shards: ShardIndex, size: int, key: str, positions: np.ndarray | None = None):
        self.shards, self.size, self.key = shards, int(size), key
        starts = np.cumsum([0, *shards.counts])
        self._starts = starts  # position of each shard's first sample in the whole stream
        self.positions = np.arange(starts[-1]) if positions is None else np.asarray(positions, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self), 3, self.size, self.size)

    def subset(self, indices) -> "ShardImages":
        return ShardImages(self.shards, self.size, self.key, self.positions[np.asarray(indices, dtype=np.int64)])

    def _shard_of(self, positions: np.ndarray) -> np.ndarray:
        return np.searchsorted(self._starts, positions, side="right") - 1

    def layout(self) -> list[np.ndarray]:
        """This set's indices shard by shard, in the order the shards hold them."""
        shard = self._shard_of(self.positions)
        order = np.argsort(self.positions, kind="stable")
        return [order[shard[order] == s] for s in range(len(self.shards.urls))]

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, (int, np.integer)):
            return next(self.batches([torch.tensor([int(index)])]))[0]
        if isinstance(index, slice):
            index = torch.arange(len(self))[index]
        index = torch.as_tensor(index, dtype=torch.int64).reshape(-1)
        if len(index) == 0:
            return torch.zeros((0, 3, self.size, self.size), dtype=torch.uint8)
        return next(self.batches([index]))

    def load(self, workers: int = 0) -> torch.Tensor:
        """Every image decoded into one uint8 tensor, in one pass over the shards."""
        out = torch.empty(self.shape, dtype=torch.uint8)
        order = torch.arange(len(self))
        index_batches = [order[i:i + 256] for i in range(0, len(self), 256)]
        for idx, batch in zip(index_batches, self.batches(index_batches, workers)):
            out[idx] = batch
        return out

    def batches(self, index_batches: list[torch.Tensor], workers: int = 0, ahead: int = 4) -> Iterator[torch.Tensor]:
        """The images of each batch of indices, in order, from one pass over the shards that
        hold them (in the order the batches first need them). Only the encoded bytes of
        samples read but not yet batched are held (in an epoch's order, at most the shuffle
        buffer and a batch); `workers` threads decode (PIL releases the GIL), `ahead`
        batches in advance."""
        wanted = [self.positions[torch.as_tensor(b).numpy()] for b in index_batches]
        if not wanted:
            return
        flat = np.concatenate(wanted)
        shard_of = self._shard_of(flat)
        _, first = np.unique(shard_of, return_index=True)
        visit = shard_of[np.sort(first)]  # shards in the order the batches first need them
        needed: dict[int, int] = {}
        for p in flat.tolist():
            needed[p] = needed.get(p, 0) + 1
        held: dict[int, bytes] = {}
        pool = concurrent.futures.ThreadPoolExecutor(workers) if workers > 0 else None
        pending: deque = deque()
        head = 0  # the next batch to assemble
        head_set = set(wanted[0].tolist())

        def decode_batch(images: list[bytes]) -> torch.Tensor:
            return torch.stack([decode(b, self.size) for b in images])

        def take(positions: np.ndarray) -> list[bytes]:
            out = []
            for p in positions.tolist():
                out.append(held[p])
                needed[p] -= 1
                if needed[p] == 0:
                    del held[p], needed[p]
            return out

        def complete() -> Iterator[torch.Tensor]:
            """The batches now complete, from the head on: decoded here or in the threads."""
            nonlocal head, head_set
            while head < len(wanted) and head_set.issubset(held):
                images = take(wanted[head])
                head += 1
                head_set = set(wanted[head].tolist()) if head < len(wanted) else set()
                if pool is None:
                    yield decode_batch(images)
                    continue
                pending.append(pool.submit(decode_batch, images))
                while len(pending) > ahead:
                    yield pending.popleft().result()

        try:
            for s in visit.tolist():
                start = int(self._starts[s])
                for offset, (_, image, _) in enumerate(_samples(self.shards.urls[s], self.key)):
                    if start + offset in needed:
                        held[start + offset] = image
                    if start + offset in head_set:  # a batch is handed on as soon as it is whole
                        yield from complete()
            while pending:
                yield pending.popleft().result()
            if head < len(wanted):  # the index promised samples the shards no longer hold
                raise InputError(f"{self.key}: the shards changed since they were indexed (a sample is missing); "
                                 "run again to index them anew")
        finally:
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)


def epoch_order(layout: list[np.ndarray], buffer: int, generator: torch.Generator) -> torch.Tensor:
    """An epoch's order of the indices in `layout` (per shard, in shard order) that a
    sequential reader can serve holding at most `buffer` samples and a batch:
    the shards in a random order, their samples through a shuffle buffer of `buffer`
    (each sample read replaces a random one of the buffer, which goes out). Drawn from
    `generator`, so an epoch's order is the same on every rank and after a resume."""
    shard_order = torch.randperm(len(layout), generator=generator).tolist()
    rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
    stream = np.concatenate([layout[s] for s in shard_order]) if layout else np.zeros(0, dtype=np.int64)
    out = np.empty(len(stream), dtype=np.int64)
    pool: list[int] = []
    n = 0
    draws = rng.random(len(stream))
    for i, item in enumerate(stream.tolist()):
        if len(pool) < buffer:
            pool.append(item)
            continue
        j = int(draws[i] * buffer)
        out[n], pool[j] = pool[j], item
        n += 1
    rest = rng.permutation(len(pool))
    out[n:] = np.asarray(pool, dtype=np.int64)[rest] if pool else out[n:]
    return torch.from_numpy(out)
