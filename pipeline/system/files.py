"""Content hashes and sizes of artifacts, which may be files or directories (.mlpackage),
and of the inputs a cache key holds."""

from __future__ import annotations

import hashlib
from pathlib import Path

_CHUNK = 1 << 20
_DIGESTS: dict[tuple, str] = {}  # (path, size, mtime_ns, inode) -> sha256, for this process


def file_sha256(path: Path) -> str:
    """sha256 of one file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def content_digest(path: Path) -> str:
    """sha256 of a file's bytes, remembered for this process while its size, time and inode
    stay: what a cache key holds of an input file, so that a fresh checkout of the same files
    (new times, another folder) finds the same key."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if key not in _DIGESTS:
        _DIGESTS[key] = file_sha256(path)
    return _DIGESTS[key]


def sha256(path: str | Path) -> str:
    """sha256 of a file; of a directory, sha256 over its sorted `relpath\\0filesha256\\n` lines."""
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    return tree_sha256({f.relative_to(path).as_posix(): file_sha256(f) for f in path.rglob("*") if f.is_file()})


def tree_sha256(file_hashes: dict[str, str]) -> str:
    """A directory's sha256 from its files' (relative path -> sha256), as `sha256` computes it."""
    h = hashlib.sha256()
    for relative in sorted(file_hashes):
        h.update(f"{relative}\0{file_hashes[relative]}\n".encode())
    return h.hexdigest()


def size_bytes(path: str | Path) -> int:
    """Size of a file, or the summed size of the files under a directory."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
