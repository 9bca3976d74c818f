"""Content-addressed stage cache: one directory per (stage, key), created atomically and
checked on every use.

A stage writes into a private temporary directory; only when it has finished is that
directory renamed to its final name, with an integrity record (`.entry.json`: the size and
sha256 of every file it holds). A run killed at any point therefore leaves either a
complete entry or none, and the next run resumes after the last completed stage. A lookup
checks the record: an entry whose files were altered, truncated, added or removed is
discarded with a warning that names it, and recomputed. One OS file lock per (stage, key)
lets a second run that needs a stage another run is computing wait and re-use its result.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from edgekiln.errors import InputError
from edgekiln.system.files import file_sha256, tree_sha256

_TMP = ".tmp"
_LOCKS = ".locks"
_PARTIAL = ".partial"  # per-epoch checkpoints of stages under way, kept across a kill
INDEX = ".entry.json"  # the entry's integrity record
_STALE_SECONDS = 24 * 3600
# What makes a folder an edgekiln cache: the cache-directory tag (bford.info/cachedir, which
# backup tools honour too), written when the cache is first written to. `cache gc` and
# `cache verify --discard` delete nothing in a folder without it.
MARKER = "CACHEDIR.TAG"
_TAG = ("Signature: 8a477f597d28d172789f06886806bc55\n"
        "# An edgekiln stage cache: `edgekiln cache gc` deletes only in folders that hold this file.\n")
_KEY = re.compile(r"[0-9a-f]{24}")  # stage_key's form: the only folder names an entry has


def mark(root: Path) -> None:
    """Create the cache folder `root` if needed and tag it as an edgekiln cache."""
    root.mkdir(parents=True, exist_ok=True)
    tag = root / MARKER
    if not tag.is_file():
        tmp = root / f".{MARKER}.tmp-{os.getpid()}"
        tmp.write_text(_TAG)
        os.replace(tmp, tag)


def is_cache(root: Path) -> bool:
    """Whether `root` is an edgekiln cache: its tag, or (a cache written before the tag
    existed) a lock folder beside at least one entry with its integrity record."""
    try:
        if "edgekiln" in (root / MARKER).read_text(errors="replace"):
            return True
    except OSError:
        pass
    return (root / _LOCKS).is_dir() and any(_KEY.fullmatch(p.parent.name) for p in root.glob(f"*/*/{INDEX}"))


def require_cache(root: Path) -> None:
    """InputError unless `root` is an edgekiln cache: a wrong --cache-dir (or
    EDGEKILN_CACHE_DIR) must never have its folders taken for entries and deleted."""
    if not root.is_dir():
        raise InputError(f"--cache-dir {root} does not exist: there is no edgekiln cache there (check --cache-dir "
                         "and EDGEKILN_CACHE_DIR)")
    if not is_cache(root):
        raise InputError(f"--cache-dir {root} is not an edgekiln cache (it holds no {MARKER} written by edgekiln, nor "
                         "a cache's entries): nothing was read or deleted; check --cache-dir and EDGEKILN_CACHE_DIR")
    mark(root)  # a cache from before the tag: tagged now


def stage_key(stage: str, version: str, sections: dict, input_keys: list[str]) -> str:
    """Hash of what determines a stage's result: its name, the version of the code it runs
    (stage_code.py), its config sections (as resolved JSON) and the keys of its inputs (data
    included)."""
    blob = json.dumps({"stage": stage, "version": version, "sections": sections, "inputs": input_keys},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _listing(directory: Path) -> dict[str, dict]:
    """Every file under `directory` (but the record itself): relative path -> size, sha256."""
    return {f.relative_to(directory).as_posix(): {"size": f.stat().st_size, "sha256": file_sha256(f)}
            for f in sorted(directory.rglob("*")) if f.is_file() and f.name != INDEX}


@dataclass
class EntryInfo:
    stage: str
    key: str
    path: Path
    size_bytes: int
    created: float  # epoch seconds
    last_used: float


class StageCache:
    def __init__(self, root: Path, warn=None):
        self.root = Path(root)
        self.warn = warn or (lambda message: None)  # told about every discarded entry
        self.discarded: list[dict] = []
        self._sweep_stale_temporaries()

    def entry(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def lookup(self, stage: str, key: str) -> Path | None:
        """The finished entry for (stage, key) if its files are those it was written with,
        else None (a damaged entry is discarded, with a warning, so it is recomputed)."""
        path = self.entry(stage, key)
        if not path.is_dir():
            return None
        problem = verify_entry(path)
        if problem is not None:
            self.discard(path, problem)
            return None
        with contextlib.suppress(OSError):
            os.utime(path / INDEX)  # last use, for `edgekiln cache gc`
        return path

    def recorded_sha256(self, entry: Path, relative: str) -> str:
        """The sha256 recorded at write time of a file or directory inside `entry`, in the
        form `targets.files.sha256` gives (a directory hashes its files' hashes)."""
        files = json.loads((entry / INDEX).read_text())["files"]
        if relative in files:
            return files[relative]["sha256"]
        prefix = relative.rstrip("/") + "/"
        inside = {k[len(prefix):]: v["sha256"] for k, v in files.items() if k.startswith(prefix)}
        if not inside:
            raise KeyError(f"{relative} is not in cache entry {entry}")
        return tree_sha256(inside)

    def partial(self, stage: str, key: str) -> Path:
        """Where (stage, key)'s training loops checkpoint while it runs: a re-run after a kill
        resumes there; removed when the entry is written."""
        return self.root / _PARTIAL / f"{stage}-{key}"

    def discard(self, path: Path, why: str) -> None:
        """Move a damaged entry out of the way (one rename), then delete it."""
        message = f"cache entry {path.parent.name}/{path.name} discarded: {why}; recomputing it"
        self.discarded.append({"entry": f"{path.parent.name}/{path.name}", "why": why})
        self.warn(message)
        aside = self.root / _TMP / f"discarded-{path.parent.name}-{path.name}-{uuid.uuid4().hex[:8]}"
        aside.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            os.rename(path, aside)
        shutil.rmtree(aside, ignore_errors=True)

    @contextlib.contextmanager
    def locked(self, stage: str, key: str, on_wait=None) -> Iterator[None]:
        """Hold the OS lock of (stage, key): one run computes a stage while the others wait;
        the lock goes with its holder, even one killed with -9."""
        mark(self.root)
        lock_dir = self.root / _LOCKS
        lock_dir.mkdir(parents=True, exist_ok=True)
        with open(lock_dir / f"{stage}-{key}.lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is not None:
                    on_wait()
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def writing(self, stage: str, key: str) -> Iterator[Path]:
        """Yield an empty directory to fill; on normal exit it gets its integrity record and
        becomes the entry for (stage, key) in one rename, on an exception it is deleted."""
        mark(self.root)
        tmp = self.root / _TMP / f"{stage}-{key}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            yield tmp
            record = {"stage": stage, "key": key, "created": time.time(), "files": _listing(tmp)}
            (tmp / INDEX).write_text(json.dumps(record, indent=1))
            final = self.entry(stage, key)
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(tmp, final)
            except OSError:
                if not final.is_dir():  # another run finished the same entry first: keep theirs
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def entries(self) -> list[EntryInfo]:
        """Every finished entry, oldest use first: the folders STAGE/KEY whose KEY has a stage
        key's form (nothing else in the folder is taken for one)."""
        if not self.root.is_dir():
            return []
        out = []
        for stage_dir in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for path in sorted(p for p in stage_dir.iterdir() if p.is_dir() and _KEY.fullmatch(p.name)):
                index = path / INDEX
                created = last_used = index.stat().st_mtime if index.is_file() else path.stat().st_mtime
                with contextlib.suppress(OSError, ValueError, KeyError):
                    created = json.loads(index.read_text())["created"]
                size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
                out.append(EntryInfo(stage_dir.name, path.name, path, size, created, last_used))
        return sorted(out, key=lambda e: e.last_used)

    def gc(self, older_than_seconds: float | None = None, max_size_bytes: int | None = None) -> list[EntryInfo]:
        """Delete entries unused for longer than `older_than_seconds`, then the least
        recently used until the cache holds at most `max_size_bytes`. Returns the deleted."""
        entries, removed = self.entries(), []
        now = time.time()
        total = sum(e.size_bytes for e in entries)
        for e in entries:  # least recently used first
            too_old = older_than_seconds is not None and now - e.last_used > older_than_seconds
            too_big = max_size_bytes is not None and total > max_size_bytes
            if too_old or too_big:
                with self.locked(e.stage, e.key):  # never under a run that is using it
                    shutil.rmtree(e.path, ignore_errors=True)
                total -= e.size_bytes
                removed.append(e)
        return removed

    def _sweep_stale_temporaries(self) -> None:
        if not is_cache(self.root):  # a folder that is not (yet) a cache: its .tmp is someone else's
            return
        for folder, stale in ((_TMP, _STALE_SECONDS), (_PARTIAL, 7 * _STALE_SECONDS)):
            if not (self.root / folder).is_dir():
                continue
            for leftover in (self.root / folder).iterdir():  # from killed runs; a live run's are recent
                with contextlib.suppress(OSError):
                    if time.time() - leftover.stat().st_mtime > stale:
                        shutil.rmtree(leftover, ignore_errors=True)


def verify_entry(path: Path, hashes: bool = True) -> str | None:
    """Why the entry at `path` is not what it was written as, or None: its record is missing
    or unreadable, a file is missing, added, of another size or (with `hashes`) content."""
    try:
        recorded = json.loads((path / INDEX).read_text())["files"]
    except (OSError, ValueError, KeyError) as e:
        return f"no readable integrity record ({type(e).__name__})"
    present = {f.relative_to(path).as_posix(): f for f in path.rglob("*") if f.is_file() and f.name != INDEX}
    for relative in sorted(set(recorded) - set(present)):
        return f"{relative} is missing"
    for relative in sorted(set(present) - set(recorded)):
        return f"{relative} was added after the entry was written"
    for relative, expected in recorded.items():
        if present[relative].stat().st_size != expected["size"]:
            return f"{relative} has {present[relative].stat().st_size} bytes, written with {expected['size']}"
    if hashes:
        for relative, expected in recorded.items():
            if file_sha256(present[relative]) != expected["sha256"]:
                return f"{relative} differs from what was written (sha256)"
    return None
