"""Convertibility pre-check: before any training, the untrained student is converted to every
configured target (float export and a quick INT8 pass on a few random images) and loaded in
its runtime, so an architecture a converter cannot handle stops the run in seconds, naming
the target and the op, instead of after an hour of distillation."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from edgekiln import progress
from edgekiln.data.dataset import Dataset
from edgekiln.errors import InputError
from edgekiln.progress import console
from edgekiln.targets import get_format
from edgekiln.targets.errors import ConversionError
from edgekiln.training import modeling

CALIBRATION_IMAGES = 4


class PrecheckFailed(InputError):
    """The student cannot be converted to one or more targets (exit 2)."""


def check(data: Dataset, cfg) -> tuple[dict, dict]:
    """The pre-check as the graph runs it: its record, and the [student] section without the
    candidates that cannot convert (the run stops here when none can)."""
    archs = cfg.student.candidates
    records, dropped = run(data, archs, cfg.targets)
    gone = {d["name"] for d in dropped}
    narrowed = {"student": {"arch": [a for a in archs if a not in gone]}} if gone else {}
    return {"targets": records, "dropped": dropped}, narrowed


def inputs(cfg) -> dict:
    """What the verdict depends on besides the data and this code: the candidates and the
    formats they must convert to (not the targets' names, profiles or budgets: the check
    converts with no target's options)."""
    return {"student": cfg.student.candidates, "formats": sorted({t.format for t in cfg.targets})}


def refresh(record: dict, cfg) -> dict:
    """The record with each format's targets named as the config in force names them."""
    names = _names_by_format(cfg.targets)
    return {**record, "targets": [{**r, "targets": names.get(r["format"], r["targets"])} for r in record["targets"]]}


def _names_by_format(targets) -> dict[str, list[str]]:
    """{format: the names of the targets of that format}, in the config's order."""
    names: dict[str, list[str]] = {}
    for target in targets:
        names.setdefault(target.format, []).append(target.name)
    return names


def run(data: Dataset, archs: list[str], targets) -> tuple[list[dict], list[dict]]:
    """Convert each untrained candidate student to every target's format. Returns the
    per-target records of those that convert and, for those that do not, the reason; raises
    PrecheckFailed when none converts (naming each target and op)."""
    records, dropped = [], []
    for arch in archs:
        try:
            records += _check(data, arch, targets)
        except PrecheckFailed as e:
            if len(archs) == 1:
                raise
            dropped.append({"name": arch, "why": str(e)})
            console.print(f"  [yellow]pre-check: candidate {arch} dropped: {e}")
    if len(dropped) == len(archs):
        raise PrecheckFailed("convertibility pre-check: no candidate student converts to every target:\n"
                             + "\n".join(f"  {d['name']}: {d['why']}" for d in dropped))
    return records, dropped


def _check(data: Dataset, arch: str, targets) -> list[dict]:
    """Convert the untrained `arch` to each target's format; per-format seconds, or
    PrecheckFailed at the first target that fails, naming it and the op."""
    model = modeling.create(arch, data.num_classes, pretrained=False, seed=data.seed, image_size=data.image_size)
    bundle = modeling.bundle(arch, model, data.num_classes, data.image_size, source="untrained")
    example = bundle.example_input()
    calibration = np.random.default_rng(0).standard_normal(
        (CALIBRATION_IMAGES, *example.shape[1:])).astype(np.float32)
    records = []
    by_format = _names_by_format(targets)
    with tempfile.TemporaryDirectory() as tmp:
        # Cheapest converter first: a failure shows up as early as it can.
        for fmt_name in sorted(by_format, key=lambda name: get_format(name).PRECHECK_ORDER):
            names = ", ".join(repr(n) for n in by_format[fmt_name])
            fmt = get_format(fmt_name)
            path = Path(tmp) / f"precheck{fmt.SUFFIX}"
            started = time.perf_counter()
            try:
                with progress.status(f"  pre-check: {arch} -> {fmt_name}"):
                    fmt.export_int8(bundle.model, example, calibration, path, {})
                    fmt.load(path)
            except Exception as e:  # ConversionError names the op; a runtime's own load error too
                message = str(e) if isinstance(e, ConversionError) else f"{fmt_name} runtime cannot load it: {e}"
                raise PrecheckFailed(f"convertibility pre-check: untrained student {arch!r} cannot be "
                                     f"converted for target {names} ({fmt_name}): {message}") from e
            seconds = time.perf_counter() - started
            records.append({"student": arch, "targets": by_format[fmt_name], "format": fmt_name,
                            "seconds": round(seconds, 1)})
            console.print(f"  pre-check: {arch} converts to {fmt_name} ({seconds:.0f} s)")
    return records
