"""A full disk is the environment's fault, never a bug: what it looks like, how much room is
left, and writes that leave nothing half-written behind."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from edgekiln.targets.errors import InputError

FULL = (errno.ENOSPC, errno.EDQUOT)


def free_bytes(path: str | Path) -> int | None:
    """Bytes free to this user on the disk that holds `path` (or would: its nearest existing
    folder); None when that cannot be asked."""
    path = Path(path).absolute()
    for folder in (path, *path.parents):
        if folder.exists():
            try:
                return shutil.disk_usage(folder).free
            except OSError:
                return None
    return None


def human(n: int | None) -> str:
    if n is None:
        return "unknown"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def full_disk_error(error: BaseException) -> OSError | None:
    """The ENOSPC/EDQUOT OSError behind `error` (itself, or its cause or context), if any."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in FULL:
            return error
        error = error.__cause__ or error.__context__
    return None


def nearly_full(folders, below: int = 1 << 20) -> Path | None:
    """The first of `folders` whose disk has less than `below` bytes free: a library that
    says "write failed" in its own words (safetensors, numpy, a converter) most likely met a
    full disk there."""
    for folder in folders:
        free = free_bytes(folder)
        if free is not None and free < below:
            return Path(folder)
    return None


def written_path(error: OSError, fallback: str | Path | None = None) -> str | None:
    """The file an OSError failed to write: a copy names its source first and its
    destination second (shutil), and the destination is the one the disk refused."""
    return error.filename2 or error.filename or (None if fallback is None else str(fallback))


def describe(error: OSError, fallback: str | Path | None = None, rename: tuple[Path, Path] | None = None) -> str:
    """'cannot write PATH: No space left on device (12 KB free there)' for a full disk; the
    OS's own words otherwise. `rename`: (folder written, folder the user knows it as)."""
    path = written_path(error, fallback)
    if path is not None and rename is not None:
        path = path.replace(str(rename[0]), str(rename[1]))
    why = error.strerror or str(error)
    if error.errno in FULL and path is not None:
        why += f" ({human(free_bytes(path))} free there)"
    return f"cannot write {path}: {why}" if path else why


def ensure_free(folder: str | Path, needed: int, what: str) -> None:
    """InputError before a write of about `needed` bytes into `folder` that cannot fit."""
    free = free_bytes(folder)
    if free is not None and free < needed:
        raise InputError(f"{what} needs about {human(needed)} in {folder}, and that disk has {human(free)} free: "
                         "free some space (or move --cache-dir) and re-run; the stages finished so far stay cached")


def save_torch(obj, path: Path) -> None:
    """torch.save to `path` atomically (temporary file + rename), the temporary file removed
    on any failure. A full disk is an OSError naming `path`: torch reports one as a
    RuntimeError ("unexpected pos", "file write failed"), with or without the OSError of
    the write behind it."""
    import torch

    from edgekiln.targets.interrupts import deferred

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with deferred():  # a signal inside would reach torch as its RuntimeError: it waits for the rename
        try:
            with open(tmp, "wb") as f:
                torch.save(obj, f)
            os.replace(tmp, path)
        except BaseException as e:
            tmp.unlink(missing_ok=True)
            full = full_disk_error(e)
            if full is None and isinstance(e, RuntimeError) and nearly_full([path.parent]) is not None:
                full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            if full is not None:
                raise OSError(full.errno, full.strerror or os.strerror(full.errno), str(path)) from e
            raise
