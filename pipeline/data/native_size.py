"""The size a data source's images hold before edgekiln resizes them: what a model trained on
them most likely saw (the preprocessing check tries it), and what `init` suggests."""

from __future__ import annotations

import statistics
from pathlib import Path

from edgekiln.calibration.images import IMAGE_SUFFIXES
from edgekiln.data.config import class_folders

DIGITS_PX = 8  # sklearn's digits are 8x8
_SAMPLE_PER_CLASS = 20


def folder_short_sides(root: Path, per_class: int = _SAMPLE_PER_CLASS) -> list[int]:
    """The shorter side of up to `per_class` images per class folder of `root` (headers
    only; unreadable files are left out: the data loader names them)."""
    from PIL import Image

    sides = []
    for cls in class_folders(root):
        taken = 0
        for f in sorted(cls.rglob("*")):
            if taken >= per_class:
                break
            if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file():
                try:
                    with Image.open(f) as im:
                        sides.append(min(im.size))
                        taken += 1
                except OSError:
                    continue
    return sides


def _idx_rows(folder: Path) -> int | None:
    """The image height an IDX training file's header gives (dimension 1 of 3)."""
    import gzip

    from edgekiln.data import idx_files

    found = idx_files.find(folder, "train", "images")
    if found is None:
        return None
    with open(found, "rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
    with (gzip.open if gzipped else open)(found, "rb") as f:
        header = f.read(16)
    return int.from_bytes(header[8:12], "big") if len(header) == 16 and header[3] == 3 else None


def native_size(source: str, path: Path | None) -> int | None:
    """The median short side of the source's images; None where it cannot be told cheaply
    (WebDataset shards) or a folder holds no readable image."""
    if source == "digits":
        return DIGITS_PX
    if source == "idx" and path is not None:
        return _idx_rows(Path(path))
    if source == "imagefolder" and path is not None and Path(path).is_dir():
        sides = folder_short_sides(Path(path))
        return int(statistics.median(sides)) if sides else None
    return None
