"""Latency profiles: one TOML data file per device, naming the artifact format, the runtime
options, the budgets an artifact must meet there, and how to measure it (the runner).

Profiles ship in `targets/profiles/`; a user's own profile is any TOML file of the same
shape, named by path (relative to the pipeline config) or found in a directory listed in
EDGEKILN_PROFILE_PATH. No code change is needed to add a device.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgekiln.system.errors import did_you_mean
from edgekiln.targets.format import format_names, get_format

SHIPPED_DIR = Path(__file__).parent / "profiles"
RUNNERS = ("host", "adb", "ssh", "estimate")


class ProfileError(Exception):
    """A profile cannot be found or does not fit the schema; names the profile and the key."""


class RuntimeOptions(BaseModel):
    """How the runtime is set up on the device: `threads`, and the options the profile's
    format declares (its RUNTIME_OPTIONS: delegate for TFLite, execution_provider for ONNX,
    compute_units for Core ML...), checked against the format by the profile."""

    model_config = ConfigDict(extra="allow")

    threads: int = Field(1, ge=1, le=256)


class Budgets(BaseModel):
    """Limits an artifact must meet on the device; an unset budget is not checked."""

    model_config = ConfigDict(extra="forbid")

    p50_ms: float | None = Field(None, gt=0)
    p90_ms: float | None = Field(None, gt=0)
    peak_memory_mb: float | None = Field(None, gt=0)
    size_mb: float | None = Field(None, gt=0)

    def merged(self, overrides: "Budgets") -> "Budgets":
        """These budgets with every budget set in `overrides` replacing its own."""
        return self.model_copy(update=overrides.model_dump(exclude_none=True))


class RunnerSpec(BaseModel):
    """How to measure. Connection details may instead come from the environment
    (EDGEKILN_ADB, EDGEKILN_ADB_SERIAL / ANDROID_SERIAL, EDGEKILN_SSH_HOST, _USER, _PORT,
    _KEY, _PYTHON), which override the file, so one profile serves many lab devices."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["host", "adb", "ssh", "estimate"]
    fallback: Literal["estimate"] | None = None  # when the device cannot be reached
    warmup_runs: int = Field(10, ge=1, le=10_000)
    runs: int = Field(100, ge=10, le=100_000)
    # Rounds of interleaved timing when a target chooses among encodings (a fifth of `runs`
    # per model and round): the spread of the rounds is the noise a faster one must beat.
    choice_rounds: int = Field(15, ge=3, le=1000)
    # adb
    adb: str = "adb"
    serial: str | None = None
    benchmark_tool: str | None = None  # on-device benchmark binary; default: the format's ADB_TOOL
    # ssh
    host: str | None = None
    user: str | None = None
    port: int = Field(22, ge=1, le=65535)
    identity_file: str | None = None
    python: str = "python3"
    ssh_options: list[str] = []
    # both: where artifacts are copied on the device
    remote_dir: str | None = None


class Int8Spec(BaseModel):
    """How INT8 weights are stored for this device's kernels (read by the ONNX format):
    onnxruntime's weight type and reduce_range. "auto" decides from the device's instruction
    sets (targets/formats/onnx.py int8_types): int8 weights where the CPU multiplies uint8 by
    int8 without saturating (VNNI, ARM's dot product), 7-bit ones (reduce_range) on x86 without VNNI."""

    model_config = ConfigDict(extra="forbid")

    weight_type: Literal["auto", "int8", "uint8"] = "auto"
    reduce_range: Literal["auto"] | bool = "auto"


class EstimateSpec(BaseModel):
    """The cost model's calibration: a CSV of reference measurements beside the profile."""

    model_config = ConfigDict(extra="forbid")

    references: str
    # An artifact precision estimated as another one (Core ML W8 weights run as fp16).
    precision_alias: dict[str, str] = {}
    # latency(precision) = ratio * latency(float), for precisions the table has too few rows
    # of; each ratio must say where it comes from in `ratio_source`.
    precision_ratio: dict[str, float] = {}
    ratio_source: str | None = None
    # The runtime's fixed cost per inference (dispatch, I/O copies), ms: every estimate is at
    # least this. Without it, a table of six rows or more fits one; `floor_source` must say
    # where a given one comes from (a published minimum, or a measured empty-model run).
    floor_ms: float | None = Field(None, gt=0)
    floor_source: str | None = None

    @model_validator(mode="after")
    def _floor_has_a_source(self) -> "EstimateSpec":
        if self.floor_ms is not None and not self.floor_source:
            raise ValueError("estimate.floor_ms needs estimate.floor_source: where the figure comes from")
        return self


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    device: str
    description: str = ""
    format: str  # a registered format (targets/formats/)
    runtime: RuntimeOptions = RuntimeOptions()
    budget: Budgets = Budgets()
    runner: RunnerSpec
    int8: Int8Spec = Int8Spec()
    estimate: EstimateSpec | None = None
    path: Path | None = None  # the file it was read from (set by load_profile)

    @field_validator("format")
    @classmethod
    def _known_format(cls, v: str) -> str:
        if v not in format_names():
            raise ValueError(f"unknown format {v!r}{did_you_mean(v, format_names())}; known: {', '.join(format_names())}")
        return v

    @model_validator(mode="after")
    def _runtime_options_of_format(self) -> "Profile":
        known = get_format(self.format).RUNTIME_OPTIONS
        for key, value in (self.runtime.model_extra or {}).items():
            if key not in known:
                raise ValueError(f"runtime.{key}: not an option of {self.format} runtimes "
                                 f"(options: threads{''.join(', ' + k for k in known)})")
            allowed = known[key][1]
            if not isinstance(value, str) or (allowed is not None and value not in allowed):
                raise ValueError(f"runtime.{key} = {value!r}: use one of {', '.join(allowed or ('a string',))}")
        return self

    @model_validator(mode="after")
    def _int8_read_by_format(self) -> "Profile":
        if self.int8 != Int8Spec() and not get_format(self.format).READS_INT8_SPEC:
            raise ValueError(f"int8: {self.format} artifacts do not read [int8]; only onnx does")
        return self

    def runtime_option(self, key: str) -> str:
        """A runtime option of the profile's format, its default where the profile sets none."""
        default = get_format(self.format).RUNTIME_OPTIONS[key][0]
        return str((self.runtime.model_extra or {}).get(key, default))

    def runtime_options(self) -> dict[str, str]:
        """Every runtime option of the profile's format (besides threads), defaults filled in."""
        return {key: self.runtime_option(key) for key in get_format(self.format).RUNTIME_OPTIONS}

    def references_path(self) -> Path:
        if self.estimate is None:
            raise ProfileError(f"profile {self.name!r} has no [estimate] section: it cannot be estimated")
        return (self.path.parent if self.path else SHIPPED_DIR) / self.estimate.references


def shipped_profiles() -> list[str]:
    """Names of the profiles that ship with edgekiln."""
    return sorted(p.stem for p in SHIPPED_DIR.glob("*.toml"))


def profile_files() -> list[Path]:
    """Every profile a name can find, in search order: EDGEKILN_PROFILE_PATH's, then the
    shipped ones; a name found earlier hides a later file of the same name."""
    seen, out = set(), []
    for folder in _search_dirs():
        for path in sorted(folder.glob("*.toml")) if folder.is_dir() else []:
            if path.stem not in seen:
                seen.add(path.stem)
                out.append(path)
    return out


def _search_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("EDGEKILN_PROFILE_PATH", "").split(os.pathsep) if p]
    return extra + [SHIPPED_DIR]


def beside(reference: str | None, base: Path) -> str | None:
    """A config's profile reference with a file path made relative to the config's folder
    (`base`); a shipped profile's name, or an absolute path, as it is."""
    if reference and (reference.endswith(".toml") or "/" in reference) and not Path(reference).is_absolute():
        return str((base / reference).resolve())
    return reference


def find_profile(name_or_path: str | Path, base: Path | None = None) -> Path:
    """The file of a profile given by name (EDGEKILN_PROFILE_PATH, then the shipped ones) or
    by path (relative to `base`, the config file's directory)."""
    text = str(name_or_path)
    if text.endswith(".toml") or os.sep in text or "/" in text:
        path = Path(text)
        if not path.is_absolute() and base is not None:
            path = base / path
        if not path.is_file():
            raise ProfileError(f"profile file {path} does not exist")
        return path.resolve()
    for directory in _search_dirs():
        candidate = directory / f"{text}.toml"
        if candidate.is_file():
            return candidate
    raise ProfileError(f"unknown profile {text!r}{did_you_mean(text, [f.stem for f in profile_files()])}; "
                       f"shipped profiles: {', '.join(shipped_profiles())} "
                       "(or give the path of a profile .toml file, or add its directory to EDGEKILN_PROFILE_PATH)")


def load_profile(name_or_path: str | Path, base: Path | None = None) -> Profile:
    """Read and validate a profile; ProfileError names the file and each bad key."""
    path = find_profile(name_or_path, base)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"profile {path} is not valid TOML: {e}") from None
    try:
        profile = Profile.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: "
                             f"{'unknown key (misspelled?)' if err['type'] == 'extra_forbidden' else err['msg']}"
                             for err in e.errors())
        raise ProfileError(f"profile {path} does not fit the schema: {problems}") from None
    profile.path = path
    if profile.estimate is not None and not profile.references_path().is_file():
        raise ProfileError(f"profile {path}: estimate.references file {profile.references_path()} does not exist")
    return profile


def host_profile(fmt: str, threads: int) -> Profile:
    """The implicit profile of a target that names none: this host, no budgets."""
    return Profile(name=f"host-{fmt}", device="this host", format=fmt,
                   runtime=RuntimeOptions(threads=threads), runner=RunnerSpec(kind="host"))
