"""IDX files, the format MNIST-style datasets ship in (MNIST, Fashion-MNIST, KMNIST, EMNIST):
a big-endian header (two zero bytes, a type code, the number of dimensions, each dimension
as an int32), then the values; gzipped or not. A dataset folder holds
`train-images-idx3-ubyte` and `train-labels-idx1-ubyte`, and its official test split as
`t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte` (each name with or without `.gz`).

`find` is torch-free (config validation names a missing file before any work); `read`
returns the values as a numpy array."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from edgekiln.errors import InputError

# The type codes of the IDX header and the numpy type of each (big-endian).
_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
SPLITS = {"train": "train", "test": "t10k"}  # our split -> the files' prefix


def find(folder: Path, split: str, kind: str) -> Path | None:
    """The `kind` ("images" or "labels") file of `split` ("train" or "test") in `folder`, or
    None when it is not there."""
    rank = 3 if kind == "images" else 1
    stem = f"{SPLITS[split]}-{kind}-idx{rank}-ubyte"
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
        if (folder / name).is_file():
            return folder / name
    return None


def missing(folder: Path) -> list[str]:
    """What a dataset folder lacks for training (names of the files not found)."""
    if not folder.is_dir():
        return [f"{folder} (not a directory)"]
    return [f"{SPLITS['train']}-{kind}-idx{3 if kind == 'images' else 1}-ubyte[.gz]"
            for kind in ("images", "labels") if find(folder, "train", kind) is None]


def read(path: Path, key: str) -> np.ndarray:
    """The array an IDX file holds; InputError naming `key` and the file when it is not one."""
    opener = gzip.open if path.read_bytes()[:2] == b"\x1f\x8b" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise InputError(f"{key}: cannot read {path}: {e}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _TYPES:
        raise InputError(f"{key}: {path} is not an IDX file (its header does not start with 0x0000 and a type code)")
    rank = data[3]
    header = 4 + 4 * rank
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(rank))
    dtype = np.dtype(_TYPES[data[2]])
    if len(data) != header + int(np.prod(shape)) * dtype.itemsize:
        raise InputError(f"{key}: {path} is truncated or too long: its header says {shape} of {dtype}, "
                         f"which is {header + int(np.prod(shape)) * dtype.itemsize} bytes; the file has {len(data)}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def read_split(folder: Path, split: str, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(images [N, H, W] uint8, labels [N] int64) of a split, or None when its files are not
    there; InputError when they do not fit together."""
    images, labels = find(folder, split, "images"), find(folder, split, "labels")
    if images is None and labels is None:
        return None
    if images is None or labels is None:
        raise InputError(f"{key}: {folder} has the {split} {'labels' if images is None else 'images'} but not the "
                         f"{'images' if images is None else 'labels'}")
    x, y = read(images, key), read(labels, key)
    if x.ndim != 3 or x.dtype != np.uint8:
        raise InputError(f"{key}: {images} holds {x.dtype} of shape {x.shape}; images are uint8 [N, H, W]")
    if y.ndim != 1 or len(y) != len(x):
        raise InputError(f"{key}: {labels} holds {y.shape} labels for {len(x)} images in {images.name}")
    return x, y.astype(np.int64)
