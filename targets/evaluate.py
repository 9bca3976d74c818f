"""The shared evaluation of an artifact, used by the export stage, prune's latency
measurement, `edgekiln bench` and `edgekiln check`: accuracy in the artifact's own runtime
(here, over ssh, or on the format's torch proxy where neither can run it), and latency on a
profile, with a device that cannot be reached turned into bad input naming the target."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable

import numpy as np

from edgekiln.targets import runners
from edgekiln.system.errors import InputError
from edgekiln.targets.errors import DeviceUnreachable, RunnerFailed, RuntimeUnavailable
from edgekiln.targets.format import Format
from edgekiln.targets.profiles import Profile
from edgekiln.targets.runners import ssh as ssh_runner


@contextlib.contextmanager
def device_errors(subject: str, profile: Profile, estimate_hint: str = "set allow_estimate = true on the target"):
    """A device that cannot be reached, or a runner that fails on it, is bad input naming
    `subject` (the target) and the profile (exit 2), never an internal error."""
    try:
        yield
    except DeviceUnreachable as e:
        hint = "" if profile.estimate is None else f"; {estimate_hint} to estimate instead"
        raise InputError(f"{subject}: profile {profile.name!r} device cannot be reached: {e}{hint}") from e
    except RunnerFailed as e:
        raise InputError(f"{subject}: profile {profile.name!r} runner {profile.runner.kind}: {e}") from e


def top1_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in percent."""
    return float((np.asarray(logits).argmax(1) == np.asarray(labels)).mean() * 100)


def runtime_logits(fmt: Format, subject: str, profile: Profile, path: Path, images: np.ndarray,
                   proxy: Callable[[], object] | None = None, status=contextlib.nullcontext) -> tuple[np.ndarray, dict]:
    """Logits of `images` in the artifact's own runtime: here where the format's runtime runs,
    on the profile's ssh device where it does not (Core ML on a Mac), else on `proxy()` (a torch
    stand-in), with the record saying which (`accuracy_source` runtime | proxy)."""
    why = fmt.runtime_unavailable()
    try:
        if why is not None and profile.runner.kind == "ssh":
            with status(f"  {subject}: {len(images)} images in {fmt.RUNTIME} over ssh"), device_errors(subject, profile):
                return ssh_runner.run_remote(path, profile, images)[1], {"accuracy_source": "runtime"}
        with status(f"  {subject}: {len(images)} images in {fmt.RUNTIME}"):
            return fmt.predict(path, images, threads=profile.runtime.threads), {"accuracy_source": "runtime"}
    except RuntimeUnavailable as e:
        if proxy is None:
            raise
        import torch

        with torch.no_grad():
            logits = proxy()(torch.from_numpy(images)).numpy()
        return logits, {"accuracy_source": "proxy", "accuracy_not_measured": str(e)}


def latency(subject: str, profile: Profile, path: Path, features, precision: str, allow_estimate: bool = False,
            candidate: bool = False, status=contextlib.nullcontext, other_layers: dict[str, int] | None = None) -> dict:
    """The profile's runner on the artifact; the record says where every figure comes from.
    A `candidate` encoding the runner cannot time (an estimate without references of its
    precision) gets no latency, and a note, rather than failing the run."""
    try:
        with status(f"  {subject}: latency on {profile.device} ({profile.runner.kind})"), \
                device_errors(subject, profile):
            m = runners.measure(path, profile, features, precision, allow_estimate=allow_estimate,
                                other_layers=other_layers)
    except RuntimeUnavailable as e:
        return {"latency_ms": None, "latency_source": None, "peak_memory_mb": None,
                "latency_notes": [f"latency not measured: {e}"]}
    except InputError as e:
        if not (candidate and isinstance(e.__cause__, RunnerFailed)):
            raise
        return {"latency_ms": None, "latency_source": None, "peak_memory_mb": None,
                "latency_notes": [f"latency neither measured nor estimated: {e.__cause__}"]}
    return {"latency_ms": m.latency_ms, "latency_source": m.source, "latency_runner": m.runner,
            "device": m.device, "latency_tool": m.tool, "peak_memory_mb": m.peak_memory_mb,
            "latency_notes": m.notes, "latency_detail": m.extra}
