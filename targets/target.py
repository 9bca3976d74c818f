"""A `[[targets]]` entry: which artifact to build and the latency profile it is checked
against. Torch-free, like the rest of the config schema."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from edgekiln.targets.encodings import candidates, unsupported
from edgekiln.system.errors import did_you_mean
from edgekiln.targets.format import format_names, get_format
from edgekiln.targets.profiles import Budgets, Profile, ProfileError, host_profile, load_profile


class EncodingError(ProfileError):
    """A target lists an encoding its format cannot write."""


class ToolsMissing(ProfileError):
    """The target's format needs packages this install lacks (a pip extra not installed)."""


class IoError(ProfileError):
    """A target asks for an interface (`io`) its format cannot build."""


class TargetConfig(BaseModel):
    """One `[[targets]]` entry: an artifact, and the latency profile it is checked against."""

    model_config = ConfigDict(extra="forbid")

    name: str
    format: str | None = None  # a registered format; default: the profile's
    profile: str | None = None  # shipped profile name or path of a profile .toml
    budget: Budgets = Budgets()  # overrides of the profile's budgets
    runner: Literal["host", "adb", "ssh", "estimate"] | None = None  # override of the profile's runner
    allow_estimate: bool = False  # estimate instead of failing when the device cannot be reached
    # A latency budget on an estimate decides on the estimate's interval's upper end
    # ("interval"), or on the point estimate ("point": accept the cost model's error).
    estimate_gate: Literal["interval", "point"] = "interval"
    threads: int | None = Field(None, ge=1, le=256)  # override of the profile's threads
    artifact: str | None = None  # file name in the output directory; default model.<format suffix>
    # "auto" (every encoding the format has) or a list: the fastest within budget ships.
    # Unset: INT8, as [quantize] asks.
    encoding: Literal["auto"] | list[str] | None = Field(None, min_length=1)
    # How an app feeds the artifact (the format's IO_MODES; default: the format's first):
    # tflite float | uint8 | int8, onnx float | uint8, coreml image | tensor.
    io: str | None = None
    latency_runs: int | None = Field(None, ge=10, le=100_000)
    warmup_runs: int | None = Field(None, ge=1, le=10_000)
    _profile: Profile | None = PrivateAttr(None)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v):
            raise ValueError("use letters, digits, '.', '_' and '-' only")
        return v

    @field_validator("format")
    @classmethod
    def _known_format(cls, v: str | None) -> str | None:
        if v is not None and v not in format_names():
            raise ValueError(f"unknown format {v!r}{did_you_mean(v, format_names())}; known: {', '.join(format_names())}")
        return v

    @field_validator("encoding")
    @classmethod
    def _distinct(cls, v):
        if isinstance(v, list) and len(set(v)) != len(v):
            raise ValueError("lists an encoding twice")
        return v

    @model_validator(mode="after")
    def _format_given(self) -> "TargetConfig":
        if self.format is None and self.profile is None:
            raise ValueError(f"give a format ({', '.join(format_names())}) or a profile")
        return self

    def resolve(self, base: Path | None = None) -> Profile:
        """Load the profile (relative paths against `base`), check it fits `format`, fill in
        `format`, and apply this entry's overrides. ProfileError names what is wrong."""
        if self.profile is None:
            profile = host_profile(self.format, self.threads or 1)
        else:
            profile = load_profile(self.profile, base)
            if self.format is not None and self.format != profile.format:
                raise ProfileError(f"profile {profile.name!r} is for {profile.format} artifacts, "
                                   f"not format {self.format!r}")
        self.format = profile.format
        fmt = get_format(self.format)
        missing = fmt.missing_tools()
        if missing is not None:
            raise ToolsMissing(missing)
        missing = unsupported(self.encoding, fmt.ENCODINGS)
        if missing:
            raise EncodingError(f"{self.format} artifacts cannot be {', '.join(missing)}; "
                                f"{self.format} encodings: {', '.join(fmt.ENCODINGS)}")
        for encoding in candidates(self.encoding, fmt.ENCODINGS, fmt.ON_REQUEST):
            problem = fmt.io_problem(self.app_io, encoding)
            if problem is not None:
                raise IoError(problem)
        runner = profile.runner.model_copy(update={k: v for k, v in {
            "kind": self.runner, "runs": self.latency_runs, "warmup_runs": self.warmup_runs}.items() if v is not None})
        runtime = profile.runtime.model_copy(update={"threads": self.threads} if self.threads else {})
        self._profile = profile.model_copy(update={"runner": runner, "runtime": runtime,
                                                   "budget": profile.budget.merged(self.budget)})
        return self._profile

    @property
    def effective_profile(self) -> Profile:
        return self._profile if self._profile is not None else self.resolve()

    def input_paths(self) -> list[tuple[str, Path, bool]]:
        """(key, path, is a data folder): the profile file it reads, if any."""
        path = getattr(self.effective_profile, "path", None)
        return [] if path is None else [(f"profile ({self.name})", Path(path), False)]

    @property
    def app_io(self) -> str:
        """The interface the artifact is built with: `io`, or the format's default."""
        return self.io or get_format(self.format).IO_MODES[0]

    @property
    def artifact_name(self) -> str:
        return self.artifact or f"model{get_format(self.format).SUFFIX}"


def artifact_budgets(target: TargetConfig | None, profile: Profile) -> dict:
    """The budget fields of an artifact's record on `profile` (the one builder of them, for
    the export stage and `check`/`bench`): the budgets, where each was set, and how a latency
    budget treats an estimate. `target`: None for an artifact measured on a profile alone."""
    return {"budget": profile.budget.model_dump(), "budget_keys": budget_keys(target, profile),
            "estimate_gate": "interval" if target is None else target.estimate_gate}


def budget_keys(target: TargetConfig | None, profile: Profile) -> dict[str, str]:
    """Where each budget was set, for gate messages: the target's override or the profile."""
    overridden = set() if target is None else set(target.budget.model_dump(exclude_none=True))
    return {field: f"targets.{target.name}.budget.{field}" if field in overridden
            else f"budget.{field} of profile {profile.name}" for field in Budgets.model_fields}


