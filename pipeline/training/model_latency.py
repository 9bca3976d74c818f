"""The latency of a torch model on a profile's device, for choices made before an artifact
exists (pruning to a latency, the student search per target): its INT8 artifact in the
profile's format timed by the profile's runner (host, adb, ssh), or the profile's cost-model
estimate where the profile measures nowhere or its device cannot be reached."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import torch

from edgekiln import progress
from edgekiln.targets.cost import cost_features
from edgekiln.targets.int8 import Int8Options
from edgekiln.targets.profiles import Profile, load_profile
from edgekiln.training import evaluation, modeling


class MeasuredLatency:
    """p50 of a torch model's INT8 artifact in the profile's format, timed by the profile's
    runner. Measurements are kept per architecture (params, MACs): training changes the
    weights, not the latency. `subject` names the config key in a device's errors;
    `allow_estimate`: an unreachable device is estimated instead (the source says so)."""

    def __init__(self, profile: str | Profile, data, bundle: modeling.ModelBundle, workdir: Path,
                 calibration_samples: int = 64, subject: str = "prune.measure", allow_estimate: bool = False,
                 estimate_hint: str = "drop prune.measure"):
        from edgekiln.calibration.sampling import balanced_sample
        from edgekiln.targets import get_format

        self.profile = profile if isinstance(profile, Profile) else load_profile(profile)
        self.format = get_format(self.profile.format)
        self.bundle, self.workdir = bundle, workdir
        self.subject, self.allow_estimate, self.estimate_hint = subject, allow_estimate, estimate_hint
        indices = torch.as_tensor(balanced_sample(data.train_y.numpy(), calibration_samples, data.seed))
        self.calibration = evaluation.model_input(bundle, data.train_x[indices]).numpy()
        self.source = self.profile.runner.kind if self.profile.runner.kind == "host" else "device"
        self._seen: dict[tuple[int, int], tuple[float, str]] = {}

    def __call__(self, model: torch.nn.Module) -> float:
        from edgekiln.targets import runners
        from edgekiln.targets.evaluate import device_errors

        size = self.bundle.input_size
        key = (modeling.params(model), modeling.macs(model, size))
        if key not in self._seen:
            features = cost_features(model, size)
            with tempfile.TemporaryDirectory(dir=self.workdir) as tmp:
                path = Path(tmp) / f"model{self.format.SUFFIX}"
                name = (getattr(model, "pretrained_cfg", None) or {}).get("architecture") or type(model).__name__
                with progress.status(f"  timing {name} on {self.profile.name}"):
                    self.format.export(copy.deepcopy(model).cpu().eval(), self.bundle.example_input(),
                                       self.calibration, path, {"description": "latency probe"}, "int8",
                                       self.format.for_profile(Int8Options(), self.profile)[0])
                    with device_errors(self.subject, self.profile, estimate_hint=self.estimate_hint):
                        measured = runners.measure(path, self.profile, features, self.format.PRECISION,
                                                   allow_estimate=self.allow_estimate)
            self._seen[key] = measured.latency_ms["p50"], measured.source  # estimate if the runner fell back
        latency, self.source = self._seen[key]
        return latency


def for_profile(profile: Profile, data, workdir: Path, subject: str, allow_estimate: bool):
    """What ranks models on `profile`: its runner's timing of each INT8 artifact where it
    measures and its device answers, else its estimate (None without an [estimate] table).
    Returns (a function of a model's bundle giving its latency function, or None; where the
    figures come from)."""
    from edgekiln.targets import get_format
    from edgekiln.targets.errors import DeviceUnreachable
    from edgekiln.targets.runners import check_reachable
    from edgekiln.targets.runners.estimate import ProfileEstimator

    def estimated(bundle):
        return ProfileEstimator(profile, bundle.input_size)

    kind = profile.runner.kind
    unavailable = get_format(profile.format).runtime_unavailable() if kind == "host" else None
    if unavailable is not None:  # e.g. Core ML off a Mac: estimated where the profile can
        if profile.estimate is None:
            return None, f"not measurable here ({unavailable}) and no [estimate] table"
        return estimated, f"estimate ({unavailable})"
    if kind in ("adb", "ssh"):
        try:
            check_reachable(profile)
        except DeviceUnreachable as e:
            if not allow_estimate or profile.estimate is None:
                raise
            return estimated, f"estimate (the {kind} device: {e})"
    if kind == "estimate":
        return (None, "no [estimate] table") if profile.estimate is None else (estimated, "estimate")

    def measured(bundle):
        return MeasuredLatency(profile, data, bundle, workdir, subject=subject, allow_estimate=allow_estimate)

    return measured, "measured on this host" if kind == "host" else f"measured on the {kind} device"
