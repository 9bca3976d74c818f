"""The teacher's outputs on a training split, kept on disk for the loops that distil from it
(every student candidate, every pruning step's recovery) and for later runs: with
deterministic inputs they are computed once per teacher and image set, not once per loop.

The runner names the folder (`storing`, the stage cache's `.teacher-outputs`); without one
a loop computes its own, as before. An entry is keyed by the teachers' weights, input size
and normalization, the hint size and the images' identity (the data fingerprint, their
number and labels); it is written to a private folder and renamed into place, so a killed
run leaves a whole entry or none, and its files' sizes and sha256 are checked on every use
(a damaged entry is recomputed). The newest KEEP entries are kept."""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from edgekiln.system.files import file_sha256

KEEP = 8  # entries kept in the folder: the newest by use
_RECORD = "outputs.json"
_STORE: contextvars.ContextVar[Path | None] = contextvars.ContextVar("teacher_outputs", default=None)


@contextlib.contextmanager
def storing(directory: Path | None) -> Iterator[None]:
    """Loops inside keep their teachers' outputs in `directory` (None: in memory only)."""
    token = _STORE.set(directory)
    try:
        yield
    finally:
        _STORE.reset(token)


def _teacher_fingerprint(teacher) -> hashlib._Hash:
    digest = hashlib.sha256(json.dumps({"hint_size": teacher.hint_size}).encode())
    for bundle in teacher.bundles:
        digest.update(json.dumps([bundle.arch, bundle.input_size, list(bundle.mean), list(bundle.std)]).encode())
        for name, tensor in bundle.model.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest


def key_of(teacher, data, logits_dtype: torch.dtype) -> str:
    """The entry of `teacher`'s outputs on `data`'s training images."""
    digest = _teacher_fingerprint(teacher)
    digest.update(json.dumps([data.fingerprint, len(data.train_y), str(logits_dtype)]).encode())
    digest.update(data.train_y.numpy().tobytes())  # the labelled and unlabelled images, in order
    return digest.hexdigest()[:24]


def outputs(teacher, data, workers: int = 0, logits_dtype: torch.dtype = torch.float16
            ) -> tuple[tuple[torch.Tensor, torch.Tensor | None], dict]:
    """The teacher's (logits, hint features) on every training image of `data`, from the
    folder `storing` names when an earlier loop or run computed them, else computed (and
    kept there). Returns them and a record: computed or re-used, seconds, the entry."""
    started = time.perf_counter()
    directory = _STORE.get()
    if directory is None:
        computed = teacher.precompute(data.train_x, workers=workers, logits_dtype=logits_dtype)
        return computed, {"stored": False, "reused": False, "seconds": round(time.perf_counter() - started, 2)}
    key = key_of(teacher, data, logits_dtype)
    entry = directory / key
    found = _load(entry, len(data.train_y))
    if found is not None:
        os.utime(entry)  # the newest by use are kept
        return found, {"stored": True, "reused": True, "entry": key, "seconds": round(time.perf_counter() - started, 2)}
    computed = teacher.precompute(data.train_x, workers=workers, logits_dtype=logits_dtype)
    seconds = time.perf_counter() - started
    _save(directory, key, computed, seconds)
    return computed, {"stored": True, "reused": False, "entry": key, "seconds": round(seconds, 2)}


def _load(entry: Path, count: int) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """The entry's outputs, mapped from disk (copy-on-write), or None when it is absent or
    its files are not those it was written with (then it is removed)."""
    record_path = entry / _RECORD
    if not record_path.is_file():
        return None
    try:
        record = json.loads(record_path.read_text())
        for name, expected in record["files"].items():
            path = entry / name
            if path.stat().st_size != expected["size"] or file_sha256(path) != expected["sha256"]:
                raise ValueError(f"{name} changed")
        arrays = [np.load(entry / name, mmap_mode="c") if name in record["files"] else None
                  for name in ("logits.npy", "hint.npy")]
        if arrays[0].shape[0] != count:
            raise ValueError("another number of images")
    except (OSError, ValueError, KeyError):
        shutil.rmtree(entry, ignore_errors=True)
        return None
    return torch.from_numpy(arrays[0]), None if arrays[1] is None else torch.from_numpy(arrays[1])


def _save(directory: Path, key: str, computed: tuple[torch.Tensor, torch.Tensor | None], seconds: float) -> None:
    """Write the entry into a private folder, then rename it into place; drop the oldest
    entries beyond KEEP. A failure to write (a full disk) costs only the re-use."""
    private = directory / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
    try:
        private.mkdir(parents=True)
        files = {}
        for name, tensor in zip(("logits.npy", "hint.npy"), computed):
            if tensor is not None:
                np.save(private / name, tensor.numpy())
                files[name] = {"size": (private / name).stat().st_size, "sha256": file_sha256(private / name)}
        (private / _RECORD).write_text(json.dumps({"files": files, "seconds": seconds}))
        os.rename(private, directory / key)
    except OSError:  # written already by another run, or no room: this loop has its outputs in memory
        shutil.rmtree(private, ignore_errors=True)
        return
    entries = sorted((p for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[KEEP:]:
        shutil.rmtree(old, ignore_errors=True)
