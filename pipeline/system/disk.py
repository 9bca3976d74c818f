"""A full disk is the environment's fault, never a bug: what it looks like, how much room is
left, and writes that leave nothing half-written behind."""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from pathlib import Path

from edgekiln.system.errors import InputError

FULL = (errno.ENOSPC, errno.EDQUOT)
ASIDE = ".edgekiln-old-"  # "<.name><ASIDE><random>": what a swap moved out of the way, deleted after it


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


def reason(error: OSError, path: str | Path) -> str:
    """Why writing `path` failed, in the OS's words, with the room left there when the disk
    is full: 'No space left on device (12 KB free there)'."""
    why = error.strerror or str(error)
    if error.errno in FULL:
        inodes = free_inodes(path)
        why += " (no free inodes there: too many files, not too many bytes)" if inodes == 0 else \
            f" ({human(free_bytes(path))} free there)"
    return why


def free_inodes(path: str | Path) -> int | None:
    """Inodes (files) free to this user on the disk that holds `path`; None when that cannot
    be asked or the file system does not count them."""
    path = Path(path).absolute()
    for folder in (path, *path.parents):
        if folder.exists():
            try:
                stats = os.statvfs(folder)
            except OSError:
                return None
            return stats.f_favail if stats.f_files else None
    return None


def describe(error: OSError, fallback: str | Path | None = None, rename: tuple[Path, Path] | None = None) -> str:
    """'cannot write PATH: No space left on device (12 KB free there)'. `rename`: (folder
    written, folder the user knows it as)."""
    path = written_path(error, fallback)
    if path is not None and rename is not None:
        path = path.replace(str(rename[0]), str(rename[1]))
    return f"cannot write {path}: {reason(error, path)}" if path else reason(error, ".")


def ensure_free(folder: str | Path, needed: int, what: str) -> None:
    """InputError before a write of about `needed` bytes into `folder` that cannot fit."""
    free = free_bytes(folder)
    if free is not None and free < needed:
        raise InputError(f"{what} needs about {human(needed)} in {folder}, and that disk has {human(free)} free: "
                         "free some space (or move --cache-dir) and re-run; the stages finished so far stay cached")


def swap_into_place(new: Path, dest: Path) -> None:
    """Make `new` (a file or a folder) be `dest` with renames on one disk. A folder in the
    way is renamed aside first and deleted after; if the second rename fails, it is put
    back: `dest` is always the old or the new, whole. SIGTERM and SIGINT wait until both
    renames are done (a signal between them would leave `dest` missing); only a kill -9
    there can leave the old folder aside, and `restore_aside` puts it back."""
    from edgekiln.system.interrupts import deferred

    if not dest.exists() or (dest.is_file() and new.is_file()):
        os.replace(new, dest)
        return
    aside = dest.with_name(f".{dest.name}{ASIDE}{uuid.uuid4().hex[:8]}")
    with deferred():
        os.rename(dest, aside)
        try:
            os.rename(new, dest)
        except OSError:
            os.rename(aside, dest)
            raise
    shutil.rmtree(aside, ignore_errors=True) if aside.is_dir() else aside.unlink(missing_ok=True)


def restore_aside(dest: Path) -> Path | None:
    """After a swap killed between its renames: the folder it had moved aside becomes
    `dest` again when `dest` is missing (the previous run comes back; returned), and is
    deleted when `dest` is there (the swap had finished)."""
    leftovers = sorted(dest.parent.glob(f".{dest.name}{ASIDE}*"), key=lambda p: p.stat().st_mtime, reverse=True)
    restored = None
    for leftover in leftovers:
        if restored is None and not dest.exists() and not dest.is_symlink():
            os.rename(leftover, dest)
            restored = dest
        elif leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    return restored


def save_torch(obj, path: Path) -> None:
    """torch.save to `path` atomically (temporary file + rename), the temporary file removed
    on any failure. A full disk is an OSError naming `path`: torch reports one as a
    RuntimeError ("unexpected pos", "file write failed"), with or without the OSError of
    the write behind it."""
    import torch

    from edgekiln.system.interrupts import deferred

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
