"""`[data]`: where the images come from and how they are split (schema only: no torch, so a
config validates in well under two seconds)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


def local_shard(url: str) -> Path | None:
    """The local file a shard names (a path, or file:PATH); None for a URL that another
    program opens (pipe:, https:, gs:, ...)."""
    if url.startswith("file:"):
        return Path(url[5:])
    return None if ":" in url.split("/")[0] else Path(url)


def expand_shards(spec: str | list[str]) -> list[str]:
    """The shards a brace pattern, a `::`-separated list or a list of them names."""
    from braceexpand import braceexpand

    items = [spec] if isinstance(spec, str) else spec
    return [url for item in items for part in item.split("::") for url in braceexpand(part)]


def _images_in(folder: Path, recursive: bool) -> Iterator[Path]:
    """The images in `folder` (and below it when `recursive`), hidden files and folders skipped."""
    from edgekiln.calibration.images import IMAGE_SUFFIXES

    for path in folder.rglob("*") if recursive else folder.iterdir():
        parts = path.relative_to(folder).parts
        if path.suffix.lower() in IMAGE_SUFFIXES and not any(p.startswith(".") for p in parts) and path.is_file():
            yield path


def class_folders(root: Path) -> list[Path]:
    """The class sub-folders of an image folder, sorted (the order torchvision's ImageFolder
    and timm number them in); hidden ones (a leading '.') are not classes."""
    return sorted(d for d in Path(root).iterdir() if d.is_dir() and not d.name.startswith("."))


def _check_image_folder(key: str, root: Path) -> None:
    """ValueError naming `key` when `root` is not one sub-folder of images per class: a file,
    a flat folder of images, fewer than two classes, or a class folder without an image.
    Only listings are read (the images' headers are read when the data loads)."""
    if not root.exists():
        return  # named as missing by the existence check
    if not root.is_dir():
        raise ValueError(f"{key}: {root} is a file; give the folder that holds one sub-folder of images per class")
    classes = class_folders(root)
    if len(classes) < 2:
        loose = sum(1 for _ in _images_in(root, recursive=False))
        if loose:
            raise ValueError(f"{key}: {root} holds {loose} images but {len(classes)} class sub-folders: put each "
                             f"class's images in a sub-folder named after it ({root}/cat/1.jpg, {root}/dog/2.jpg)")
        raise ValueError(f"{key}: {root} needs at least two class sub-folders, found "
                         f"{[d.name for d in classes] or 'none'}")
    for folder in classes:
        if next(_images_in(folder, recursive=True), None) is None:
            raise ValueError(f"{key}: class folder {folder} holds no images (.jpg, .png, .webp, ...)")


class DataConfig(BaseModel):
    """`[data]`: where the images come from and how they are split."""

    model_config = ConfigDict(extra="forbid")

    # idx: a folder of MNIST-style IDX files (train-*, and t10k-* as the test split)
    source: Literal["digits", "imagefolder", "webdataset", "idx"] = "digits"
    path: Path | None = None
    val_path: Path | None = None
    # Images without labels (any layout, nested folders allowed): distillation and pruning
    # recovery train on them with the KD term only (data/unlabelled.py).
    unlabelled_path: Path | None = None
    # Or the same from WebDataset shards (a brace pattern or a list), read in sequence like
    # `shards`; samples need no `.cls` (any is ignored). With any source.
    unlabelled_shards: str | list[str] | None = None
    test_path: Path | None = None
    # webdataset: each split's shards, a brace pattern ("train-{000..099}.tar") or a list of
    # paths or URLs; samples are `<key>.jpg` (or png, webp...) with `<key>.cls`, the class
    # index. Val and test are their own shards (nothing is carved from a stream); no
    # test_shards: no test split.
    shards: str | list[str] | None = None
    val_shards: str | list[str] | None = None
    test_shards: str | list[str] | None = None
    # webdataset, idx: the name of each class index (default "0", "1", ...); imagefolder: the
    # class folders in the order of the model's outputs (default: sorted, as torchvision's
    # ImageFolder and timm number them)
    classes: list[str] | None = None
    # webdataset: an epoch reads the shards in a random order through a buffer of this many
    # samples (encoded), shuffled within it: larger mixes better and holds more in memory.
    shuffle_buffer: int = Field(5000, ge=1, le=10_000_000)
    image_size: int = Field(32, ge=16, le=1024)
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    # Share of the images held out for the final figures (release gate); 0 with no
    # test_path: no test split, and the manifest says its figures are graded on val.
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    seed: int = 0
    max_samples: int | None = Field(None, ge=20)
    # Image folders: true leaves the training images on disk, decoded batch by batch by
    # `num_workers` processes, so memory does not grow with their number; unset streams a
    # training split that would take more than STREAM_ABOVE_BYTES decoded. Val and test are
    # decoded into memory either way: every evaluation reads them whole.
    streaming: bool | None = None
    num_workers: int | None = Field(None, ge=0, le=64)  # default: one per core but one, up to 8
    # Image folders: an image with more pixels than this stops the run before any work (read
    # from its header, never decoded); the default is Pillow's own decompression-bomb limit.
    max_image_pixels: int = Field(89_478_485, ge=1)
    # Image folders: a class folder or image that is a link to somewhere outside the folder is
    # refused unless this is true.
    follow_symlinks: bool = False

    @model_validator(mode="after")
    def _paths_fit_source(self) -> "DataConfig":
        if self.source == "imagefolder" and self.path is None:
            raise ValueError("source 'imagefolder' needs `path` (a folder of class sub-folders)")
        if self.source == "idx" and self.path is None:
            raise ValueError("source 'idx' needs `path` (a folder with train-images-idx3-ubyte[.gz] and "
                             "train-labels-idx1-ubyte[.gz], and t10k-* for the test split)")
        if self.source == "idx" and (self.val_path or self.test_path or self.streaming):
            raise ValueError("source 'idx' takes no `val_path`, `test_path` or `streaming`: val is carved from the "
                             "train files, the test split is the t10k files beside them (else carved too), and "
                             "the images are held in memory")
        if self.source == "digits" and (self.path or self.val_path or self.test_path):
            raise ValueError("source 'digits' takes no `path`, `val_path` or `test_path`")
        if self.source == "digits" and self.streaming:
            raise ValueError("streaming = true needs source 'imagefolder' or 'webdataset': the digits are 1,797 "
                             "images in memory")
        if self.unlabelled_path is not None and self.unlabelled_shards is not None:
            raise ValueError("give unlabelled_path (a folder) or unlabelled_shards (WebDataset shards), not both")
        if self.source == "webdataset":
            self._fits_shards()
        elif self.shards or self.val_shards or self.test_shards:
            raise ValueError(f"source '{self.source}' takes no `shards`, `val_shards` or `test_shards` "
                             "(those are for source 'webdataset')")
        elif self.classes and self.source not in ("idx", "imagefolder"):
            raise ValueError(f"source '{self.source}' takes no `classes` (the class names are its folders' or "
                             "its own)")
        carved = (0.0 if self.val_path else self.val_fraction) + (0.0 if self.test_path else self.test_fraction)
        if carved >= 0.9:
            raise ValueError(f"val_fraction + test_fraction = {carved:g} leaves under 10% of the images to train on")
        return self

    def _fits_shards(self) -> None:
        if not self.shards or not self.val_shards:
            raise ValueError("source 'webdataset' needs `shards` and `val_shards` (the training and validation shards)")
        unread = [k for k in ("path", "val_path", "test_path", "max_samples") if getattr(self, k) is not None]
        if unread:
            raise ValueError(f"{', '.join(unread)}: not read with source 'webdataset' (each split is its own shards; "
                             "val_fraction and test_fraction are not read either)")

    def resolve_paths(self, base: Path) -> None:
        """Folders and local shards relative to the config file (URLs as they are)."""
        def fix(p: Path | None) -> Path | None:
            return p if p is None or p.is_absolute() else (base / p).resolve()

        def fix_shards(spec: str | list[str] | None) -> str | list[str] | None:
            def one(url: str) -> str:  # a local path or pattern; URLs (pipe:, https:, ...) as they are
                return url if local_shard(url) is None or url.startswith("file:") else str(fix(Path(url)))
            return spec if spec is None else one(spec) if isinstance(spec, str) else [one(u) for u in spec]

        self.path, self.val_path, self.test_path = fix(self.path), fix(self.val_path), fix(self.test_path)
        self.unlabelled_path = fix(self.unlabelled_path)
        self.shards, self.val_shards = fix_shards(self.shards), fix_shards(self.val_shards)
        self.test_shards, self.unlabelled_shards = fix_shards(self.test_shards), fix_shards(self.unlabelled_shards)

    def input_paths(self) -> list[tuple[str, Path, bool]]:
        """(key, path, is a data folder) of every folder and local shard it reads."""
        out = [(key, Path(value), Path(value).is_dir()) for key in ("path", "val_path", "test_path", "unlabelled_path")
               if (value := getattr(self, key)) is not None]
        for key in ("shards", "val_shards", "test_shards", "unlabelled_shards"):
            spec = getattr(self, key)
            for url in [] if spec is None else expand_shards(spec):
                shard = local_shard(url)
                if shard is not None:
                    out.append((key, shard, False))
        return out

    def check_inputs(self) -> None:
        """ValueError ("key: why") for a missing shard, an IDX folder without its files, or an
        image folder that cannot be a dataset (a file, no class sub-folders, an empty class):
        found by `validate` and before any work, not after the teacher trained. Every problem
        found is in the message, one per line."""
        problems = []
        if self.source == "imagefolder":
            for key in ("path", "val_path", "test_path"):
                if getattr(self, key) is not None:
                    try:
                        _check_image_folder(key, getattr(self, key))
                    except ValueError as e:
                        problems.append(str(e))
        for key in ("shards", "val_shards", "test_shards", "unlabelled_shards"):
            spec = getattr(self, key)
            for url in [] if spec is None else expand_shards(spec):
                path = local_shard(url)
                if path is not None and not path.is_file():
                    problems.append(f"{key}: shard {path} does not exist")
                    break
        if self.unlabelled_path is not None:
            if not self.unlabelled_path.is_dir():
                problems.append(f"unlabelled_path: {self.unlabelled_path} is not a folder")
            elif next(_images_in(self.unlabelled_path, recursive=True), None) is None:
                problems.append(f"unlabelled_path: {self.unlabelled_path} holds no images (.jpg, .png, .webp, ...)")
        if self.source == "idx" and self.path is not None and self.path.is_dir():
            from edgekiln.data import idx_files

            lacking = idx_files.missing(self.path)
            if lacking:
                problems.append(f"path: {self.path} has no {' and no '.join(lacking)} (source 'idx')")
        if problems:
            raise ValueError("\n".join(problems))
