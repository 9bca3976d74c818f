"""Indexes of data sources (what a folder or a shard list holds, and that every image opens),
kept by fingerprint under the run's cache directory (`<cache-dir>/.index/`), so a large source
is read through once per change instead of once per run."""

from __future__ import annotations

import json
import os
from pathlib import Path


def read(index_dir: Path | None, name: str) -> dict | None:
    """The index recorded as `name`, or None (none yet, no index directory, or a torn file:
    the caller indexes again)."""
    if index_dir is None:
        return None
    try:
        return json.loads((index_dir / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None


def write(index_dir: Path | None, name: str, record: dict) -> None:
    """Record `record` as `name`, atomically (a reader sees the old file or the new one)."""
    if index_dir is None:
        return
    index_dir.mkdir(parents=True, exist_ok=True)
    path = index_dir / f"{name}.json"
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)
