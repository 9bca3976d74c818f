"""Content-addressed stage cache: one directory per (stage, key), created atomically.

A stage writes into a private temporary directory; only when it has finished is that
directory renamed to its final name. A run killed at any point therefore leaves either a
complete entry or none, and the next run resumes after the last completed stage.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Iterator

_TMP = ".tmp"
_STALE_SECONDS = 24 * 3600


def code_version(version: str, tools: dict[str, str | None], packages: list[str]) -> str:
    """The code a result depends on: edgekiln's version, the hash of its own source files
    (so an edited checkout never re-uses results of the old code) and the toolchain versions
    (a converter upgrade re-exports)."""
    h = hashlib.sha256(json.dumps([version, tools], sort_keys=True).encode())
    for package in packages:
        directory = Path(importlib.import_module(package).__file__).parent
        for source in sorted(directory.glob("*.py")):
            h.update(source.name.encode() + b"\0" + source.read_bytes())
        for sub in sorted(p for p in directory.iterdir() if p.is_dir() and (p / "__init__.py").is_file()):
            for source in sorted(sub.glob("*.py")):  # subpackages (edgekiln.targets.runners)
                h.update(f"{sub.name}/{source.name}".encode() + b"\0" + source.read_bytes())
    return h.hexdigest()[:16]


def stage_key(stage: str, version: str, sections: dict, input_keys: list[str]) -> str:
    """Hash of what determines a stage's result: its name, the code version, its config
    sections (as resolved JSON) and the keys of its inputs (data included)."""
    blob = json.dumps({"stage": stage, "version": version, "sections": sections, "inputs": input_keys},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


class StageCache:
    def __init__(self, root: Path):
        self.root = Path(root)
        self._sweep_stale_temporaries()

    def entry(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def lookup(self, stage: str, key: str) -> Path | None:
        """The finished entry for (stage, key), or None."""
        path = self.entry(stage, key)
        return path if path.is_dir() else None

    @contextlib.contextmanager
    def writing(self, stage: str, key: str) -> Iterator[Path]:
        """Yield an empty directory to fill; on normal exit it becomes the entry for
        (stage, key) in one rename, on an exception it is deleted."""
        tmp = self.root / _TMP / f"{stage}-{key}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            yield tmp
            final = self.entry(stage, key)
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(tmp, final)
            except OSError:
                if not final.is_dir():  # another run finished the same entry first: keep theirs
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _sweep_stale_temporaries(self) -> None:
        tmp_root = self.root / _TMP
        if not tmp_root.is_dir():
            return
        for leftover in tmp_root.iterdir():  # from killed runs; a live run's are recent
            with contextlib.suppress(OSError):
                if time.time() - leftover.stat().st_mtime > _STALE_SECONDS:
                    shutil.rmtree(leftover, ignore_errors=True)
