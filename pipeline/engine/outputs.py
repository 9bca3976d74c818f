"""The output folder (`--out`) is edgekiln's own.

A run never writes into the user's data or cache, never mixes its files into a folder of
someone else's, and never leaves half an output behind: it writes everything into a staging
folder beside `--out` and, once the manifest is written, swaps it in with renames. A reader
of `--out` sees the previous run whole or this one whole. Without a manifest (the run was
refused, or a full disk stopped it before one could be written) nothing is published and
the previous contents stay.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from edgekiln.errors import InputError
from edgekiln.progress import console
from edgekiln.system.disk import restore_aside, swap_into_place

_STAGING = ".edgekiln-staging-"  # "<.out name><_STAGING><pid>-<random>", beside --out


def input_paths(cfg, config_path: Path | None = None) -> list[tuple[str, Path, bool]]:
    """What the config reads: (key, path, is a folder of data) for every data folder, shard,
    checkpoint, calibration folder and profile file it names, and the config file itself."""
    from edgekiln.engine.config import input_paths as named

    return named(cfg) + ([] if config_path is None else [("the config file", Path(config_path), False)])


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def refuse_unsafe(out: Path, cache_dir: Path, inputs: list[tuple[str, Path, bool]]) -> None:
    """InputError, before any work, when `--out` would write into what the run reads or
    keeps: inside or equal to a data folder or the cache; or, when it holds an earlier run
    (which a run replaces as a whole), when it holds an input or the cache."""
    out_r, cache_r = out.resolve(), cache_dir.resolve()
    replaces = out.is_dir() and not foreign_entries(out)  # --out is replaced as a whole, not merged into
    if _inside(out_r, cache_r) or (replaces and _inside(cache_r, out_r)):
        raise InputError(f"--out {out} and --cache-dir {cache_dir} overlap: the outputs would mix with the cache "
                         "(or replacing --out would delete it); give them separate folders")
    for key, path, is_data in inputs:
        path_r = path.resolve()
        if is_data and _inside(out_r, path_r):
            raise InputError(f"--out {out} is inside {key} ({path}): its files would become data of the next run; "
                             "write the outputs elsewhere")
        if is_data and _inside(cache_r, path_r):
            raise InputError(f"--cache-dir {cache_dir} is inside {key} ({path}): the cache would become data of the "
                             "next run; keep it elsewhere")
        if replaces and _inside(path_r, out_r):
            raise InputError(f"--out {out} holds {key} ({path}): a run replaces an earlier output folder as a whole, "
                             "which would delete it; write the outputs elsewhere")


# What a run writes into --out besides its artifacts (which its manifest lists); config.toml:
# the config a command built (`edgekiln compress`), kept to reproduce the run.
KEPT_CONFIG = "config.toml"
RUN_FILES = ("manifest.json", "splits.json", "predictions.json", "report.html", "report.png", "tradeoff.png",
             "MODEL_CARD.md", KEPT_CONFIG)
# What file browsers and empty-folder conventions leave in any folder: never someone's work.
LITTER = (".DS_Store", "Thumbs.db", "desktop.ini", ".gitkeep")


def is_edgekiln_output(folder: Path) -> bool:
    """Whether `folder` holds an earlier run's outputs (an edgekiln manifest.json)."""
    return _manifest(folder) is not None


def _manifest(folder: Path) -> dict | None:
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError, RecursionError):
        return None
    ok = isinstance(manifest, dict) and "edgekiln_version" in manifest and isinstance(manifest.get("artifacts"), list)
    return manifest if ok else None


def foreign_entries(folder: Path) -> list[str]:
    """What `folder` holds that no edgekiln run wrote there: everything (but a file
    browser's litter), unless it holds an earlier run's manifest; then what is neither that
    run's files nor its artifacts."""
    if not folder.is_dir():
        return []
    manifest = _manifest(folder)
    ours = set() if manifest is None else \
        {*RUN_FILES, *(a.get("path") for a in manifest["artifacts"] if isinstance(a, dict))}
    if manifest is not None and not _kept_config_is_the_runs(folder, manifest):
        ours.discard(KEPT_CONFIG)  # a user's config.toml, or one edited since the run wrote it
    return sorted(p.name for p in folder.iterdir() if p.name not in ours and p.name not in LITTER)


def _kept_config_is_the_runs(folder: Path, manifest: dict) -> bool:
    """Whether `folder`/config.toml is the config the run recorded there wrote (the same
    text its manifest's config_sha256 hashes); not a file the user put or edited there."""
    import hashlib

    try:
        written = hashlib.sha256((folder / KEPT_CONFIG).read_bytes()).hexdigest()
    except OSError:
        return True  # none there: nothing to keep
    return written == manifest.get("config_sha256")


def check_out(out: Path, force: bool, config_inside: bool = False) -> None:
    """InputError when `--out` is a file, or holds files that no edgekiln run wrote there
    and `force` is not given. `config_inside`: the run's config is `out`/config.toml (a
    kept config run again, perhaps edited): it is this run's own input, not foreign."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a folder")
    foreign = [f for f in foreign_entries(out) if not (config_inside and f == KEPT_CONFIG)]
    if foreign and not force:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        what = "holds files an earlier edgekiln run did not write" if is_edgekiln_output(out) else \
            "is not empty and is not an earlier edgekiln output"
        if KEPT_CONFIG in foreign and is_edgekiln_output(out):
            what += (f" ({KEPT_CONFIG} is not the config its run wrote there: edited since, or put there; run it with "
                     f"`edgekiln run {out / KEPT_CONFIG} --out {out}`, or move it)")
        raise InputError(f"--out {out} {what} (it holds {shown}): choose a new or empty folder, or pass --force to write "
                         "the outputs beside those files")


@dataclass
class Staging:
    """A run's outputs while they are written: `path` is the folder to fill."""

    path: Path
    abandoned: bool = False
    published: bool = False  # set on leaving: `out` now holds this run's outputs

    def abandon(self) -> None:
        """Publish nothing: `--out` keeps what it held."""
        self.abandoned = True


def through_link(out: Path) -> Path:
    """The folder a symlinked `--out` points to (a deploy step reading through the link must
    find this run there, and the link must stay a link); `out` itself otherwise."""
    if not out.is_symlink():
        return out
    target = out.resolve()
    console.print(f"--out {out} is a link to {target}: the outputs go there", markup=False)
    return target


def recover(out: Path) -> None:
    """Put back an earlier output that a run killed (kill -9) between the renames of its
    swap had moved aside, before anything looks at `out`."""
    if out.parent.is_dir() and restore_aside(out) is not None:
        console.print(f"restored {out}: a run killed while swapping its outputs in had moved the earlier run aside",
                      markup=False)


def sweep(out: Path) -> None:
    """Remove staging folders a killed run left beside `out` (their process is gone)."""
    parent = out.parent
    if not parent.is_dir():
        return
    for leftover in parent.glob(f".{out.name}{_STAGING}*"):
        pid = leftover.name[len(f".{out.name}{_STAGING}"):].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _only_writer(out: Path) -> Iterator[None]:
    """Hold the lock of `out` (a hidden file beside it, removed after): a second run writing
    the same `--out` at the same time is refused, instead of both publishing and one
    pointing at the other's manifest. The OS lock goes with its holder, even one killed -9."""
    lock = out.parent / f".{out.name}.edgekiln-lock"
    while True:
        try:
            handle = open(lock, "a+")
        except OSError as e:
            raise InputError(f"--out {out}: not writable: {e.strerror or e}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise InputError(f"--out {out} is being written by another edgekiln run right now: wait for it to finish, "
                             "or give this run another --out") from None
        try:  # the last holder may have removed the file between our open and our lock: lock the new one
            if os.fstat(handle.fileno()).st_ino == os.stat(lock).st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        handle.close()


@contextlib.contextmanager
def staged(out: Path, force: bool = False, config_inside: bool = False) -> Iterator[Staging]:
    """Yield a Staging to write the run's outputs into; on leaving (normally, on an error or
    on a signal) it replaces `out` if it holds a manifest.json and was not abandoned, and is
    removed otherwise. InputError when the folder beside `out` cannot be written."""
    out = Path(out)
    recover(out)
    check_out(out, force, config_inside)
    created = [p for p in [out.parent, *out.parent.parents] if not p.exists()]
    published = False
    try:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"--out {out}: not writable: {e.strerror or e}") from None
        with _only_writer(out):
            try:
                sweep(out)
                path = out.parent / f".{out.name}{_STAGING}{os.getpid()}-{uuid.uuid4().hex[:8]}"
                path.mkdir()
            except OSError as e:
                raise InputError(f"--out {out}: not writable: {e.strerror or e}") from None
            # --force on others' files (check_out refused them otherwise)
            merge = any(not (config_inside and f == KEPT_CONFIG) for f in foreign_entries(out))
            staging = Staging(path)
            try:
                yield staging
            finally:
                try:
                    if not staging.abandoned and (path / "manifest.json").is_file():
                        _swap_in(path, out, merge)
                        staging.published = published = True
                finally:
                    shutil.rmtree(path, ignore_errors=True)
    finally:
        if not published:
            _remove_folders(created)


def _swap_in(staging: Path, out: Path, merge: bool) -> None:
    """Make `staging` the content of `out` (an earlier output is replaced as a whole); with
    `merge` (--force), each output replaces its namesake and the folder's other files stay."""
    if merge:
        for entry in staging.iterdir():
            swap_into_place(entry, out / entry.name)
    else:
        swap_into_place(staging, out)


def _remove_folders(folders: list[Path]) -> None:
    for folder in folders:  # deepest first
        with contextlib.suppress(OSError):
            folder.rmdir()
