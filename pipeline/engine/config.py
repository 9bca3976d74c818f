"""The pipeline's TOML config: one schema, validated in full before any work starts."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from edgekiln.stages.config import BUDGETED_STAGES, PruneConfig, QuantizeConfig, StudentConfig, TeacherConfig
from edgekiln.data.config import DataConfig, expand_shards, local_shard
from edgekiln.training.config import DistillConfig, TrainConfig
from edgekiln.targets.profiles import ProfileError
from edgekiln.targets.target import EncodingError, IoError, TargetConfig


class ConfigError(Exception):
    """The config file is missing, not TOML, or does not fit the schema; names key paths."""


# `[budget.max_drop]`: accuracy points a stage may lose against the stage before it.
StageBudgets = create_model(
    "StageBudgets", __config__=ConfigDict(extra="forbid"),
    **{stage: (float | None, Field(None, ge=0.0, le=100.0)) for stage in BUDGETED_STAGES})


class BudgetConfig(BaseModel):
    """`[budget]`: accuracy points any stage or artifact may lose against the teacher."""

    model_config = ConfigDict(extra="forbid")

    max_drop_total: float = Field(5.0, ge=0.0, le=100.0)
    max_drop: StageBudgets = StageBudgets()
    # How the release gates (artifacts on the test split) treat the drop's 95% interval:
    # "point" decides on the drop itself; "strict" passes only when the interval's upper end
    # is within budget; "lenient" fails only when its lower end is over budget.
    gate: Literal["point", "strict", "lenient"] = "point"


class ReleaseConfig(BaseModel):
    """`[release]`: how far a run may regress against the last release before `edgekiln diff`
    fails (exit 1). Read from the new run's manifest; the diff's flags override it."""

    model_config = ConfigDict(extra="forbid")

    max_accuracy_drop: float = Field(1.0, ge=0.0, le=100.0)  # points of test accuracy
    max_latency_increase: float = Field(10.0, ge=0.0)  # percent, p50 and p90
    max_size_increase: float = Field(10.0, ge=0.0)  # percent of the artifact's bytes


class CardConfig(BaseModel):
    """`[card]`: what MODEL_CARD.md says the model is for; every figure in it comes from the run."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    description: str | None = None
    intended_use: str | None = None
    out_of_scope: str | None = None
    limitations: str | None = None
    owner: str | None = None
    license: str | None = None


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: DataConfig = DataConfig()
    teacher: TeacherConfig
    student: StudentConfig = StudentConfig()
    train: TrainConfig = TrainConfig()
    distill: DistillConfig = DistillConfig()
    prune: PruneConfig = PruneConfig()
    quantize: QuantizeConfig = QuantizeConfig()
    budget: BudgetConfig = BudgetConfig()
    targets: list[TargetConfig] = Field(min_length=1)
    release: ReleaseConfig = ReleaseConfig()
    card: CardConfig = CardConfig()

    @model_validator(mode="after")
    def _unique_target_names(self) -> "PipelineConfig":
        _first_duplicate([t.name for t in self.targets], "name")
        return self

    @model_validator(mode="after")
    def _nothing_ships_untrained(self) -> "PipelineConfig":
        if self.student.epochs == 0:
            raise ValueError("student.epochs = 0 would ship a student that was never trained: give a number of "
                             'epochs or "auto"')
        untrained = [c for c in self.teacher.resolved() if c.checkpoint is None]
        if self.teacher.epochs == 0 and untrained:
            raise ValueError(f"teacher.epochs = 0 would distil from {untrained[0].name} untrained (its classifier "
                             'head is new): give a number of epochs or "auto"; 0 is for candidates given as '
                             "{arch, checkpoint} tables with weights trained on these classes")
        return self


def _first_duplicate(values: list[str], what: str) -> None:
    seen: dict[str, int] = {}
    for i, value in enumerate(values):
        if value in seen:
            raise ValueError(f"targets[{i}] has the same {what} {value!r} as targets[{seen[value]}]")
        seen[value] = i


def _resolve_profiles(cfg: PipelineConfig, base: Path, path: Path) -> None:
    """Load every target's latency profile now, so a bad one stops the run before any work."""
    for i, target in enumerate(cfg.targets):
        try:
            target.resolve(base)
        except EncodingError as e:
            raise ConfigError(f"{path}: targets[{i}].encoding: {e}") from None
        except IoError as e:
            raise ConfigError(f"{path}: targets[{i}].io: {e}") from None
        except ProfileError as e:
            raise ConfigError(f"{path}: targets[{i}].profile: {e}") from None
    try:
        _first_duplicate([t.artifact_name for t in cfg.targets], "artifact")
    except ValueError as e:
        raise ConfigError(f"{path}: {e}") from None


def _key_path(loc: tuple) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1]}[{item}]" if parts else f"[{item}]"]
        elif item in ("str", "TeacherCandidate") or "[" in str(item):
            continue  # union branch names are not part of the user's key path
        else:
            parts.append(str(item))
    return ".".join(parts) or "(top level)"


def _describe(error: ValidationError) -> str:
    lines = []
    for e in error.errors():
        message = "unknown key (misspelled?)" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"  {_key_path(e['loc'])}: {message}")
    return "\n".join(dict.fromkeys(lines))  # union branches repeat the same complaint


def _too_deep(value) -> str | None:
    """The key path of the first value nested deeper than MAX_DEPTH, if any (iterative:
    a hostile config cannot exhaust the stack here)."""
    stack = [(value, "", 0)]
    while stack:
        item, key, depth = stack.pop()
        if depth > MAX_DEPTH:
            return key or "(top level)"
        if isinstance(item, dict):
            stack.extend((v, f"{key}.{k}" if key else str(k), depth + 1) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, f"{key}[{i}]", depth + 1) for i, v in enumerate(item))
    return None


def _non_finite(value, key: str = "") -> str | None:
    """The key path of the first inf or nan in the raw TOML, if any (TOML allows them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return key or "(top level)"
    if isinstance(value, dict):
        items = ((f"{key}.{k}" if key else str(k), v) for k, v in value.items())
    elif isinstance(value, list):
        items = ((f"{key}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for sub, v in items:
        found = _non_finite(v, sub)
        if found:
            return found
    return None


def _resolve_paths(cfg: PipelineConfig, base: Path) -> None:
    """Relative paths in the config are relative to the config file, not the working directory."""
    def fix(p: Path | None) -> Path | None:
        return p if p is None or p.is_absolute() else (base / p).resolve()

    def fix_shards(spec: str | list[str] | None) -> str | list[str] | None:
        def one(url: str) -> str:  # a local path or pattern; URLs (pipe:, https:, ...) as they are
            return url if local_shard(url) is None or url.startswith("file:") else str(fix(Path(url)))
        return spec if spec is None else one(spec) if isinstance(spec, str) else [one(u) for u in spec]

    cfg.data.path, cfg.data.val_path = fix(cfg.data.path), fix(cfg.data.val_path)
    cfg.data.test_path = fix(cfg.data.test_path)
    cfg.data.shards, cfg.data.val_shards = fix_shards(cfg.data.shards), fix_shards(cfg.data.val_shards)
    cfg.data.test_shards = fix_shards(cfg.data.test_shards)
    cfg.quantize.calibration_path = fix(cfg.quantize.calibration_path)
    if cfg.prune.profile and (cfg.prune.profile.endswith(".toml") or "/" in cfg.prune.profile):
        cfg.prune.profile = str(fix(Path(cfg.prune.profile)))  # a profile file beside the config
    if cfg.student.profile and (cfg.student.profile.endswith(".toml") or "/" in cfg.student.profile):
        cfg.student.profile = str(fix(Path(cfg.student.profile)))
    for i, cand in enumerate(cfg.teacher.candidates):
        if not isinstance(cand, str):
            cand.checkpoint = fix(cand.checkpoint)
        elif cand.startswith("hf:") and (base / cand[3:]).is_dir():  # a local directory, not a hub id
            cfg.teacher.candidates[i] = f"hf:{(base / cand[3:]).resolve()}"


# What `validate` cannot check without importing torch (timm and transformers need it): the
# run's preflight checks these before any work, with the same exit code.
DEFERRED_CHECKS = (
    "timm architecture names (teacher.candidates, student.arch) and their pretrained weights",
    "teacher checkpoints load into their architecture",
    "train.randaugment parses as a timm RandAugment string",
)


def check_files(cfg: PipelineConfig) -> None:
    """Every file and folder the config names exists (ConfigError naming the key)."""
    named = [("data.path", cfg.data.path), ("data.val_path", cfg.data.val_path),
             ("data.test_path", cfg.data.test_path), ("quantize.calibration_path", cfg.quantize.calibration_path)]
    named += [(f"teacher.candidates[{i}].checkpoint", c.checkpoint) for i, c in enumerate(cfg.teacher.candidates)
              if not isinstance(c, str)]
    for key, path in named:
        if path is not None and not path.exists():
            raise ConfigError(f"{key}: {path} does not exist")
    if cfg.data.source == "idx":
        from edgekiln.data import idx_files

        lacking = idx_files.missing(cfg.data.path)
        if lacking:
            raise ConfigError(f"data.path: {cfg.data.path} has no {' and no '.join(lacking)} (source 'idx')")
    for key, spec in (("data.shards", cfg.data.shards), ("data.val_shards", cfg.data.val_shards),
                      ("data.test_shards", cfg.data.test_shards)):
        for url in [] if spec is None else expand_shards(spec):
            path = local_shard(url)
            if path is not None and not path.is_file():
                raise ConfigError(f"{key}: shard {path} does not exist")


def load_config(path: str | Path) -> PipelineConfig:
    """Read and validate a pipeline TOML file; ConfigError lists every problem by key path.
    Relative paths in it are relative to the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory") from None
    return config_from_text(text, base=path.resolve().parent, name=str(path))


MAX_DEPTH = 16  # tables and arrays nested deeper than any config needs (the schema has 4 levels)


def config_from_text(text: str, base: Path | None = None, name: str = "config") -> PipelineConfig:
    """Validate TOML text; relative paths are relative to `base` (default: the working directory)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{name} is not valid TOML: {e}") from None
    except RecursionError:
        raise ConfigError(f"{name}: tables or arrays nested too deeply to read (a config needs at most "
                          f"{MAX_DEPTH} levels)") from None
    return config_from_dict(raw, base=base, name=name)


def config_from_dict(raw: dict, base: Path | None = None, name: str = "config") -> PipelineConfig:
    """Validate a config given as a dict (the TOML's tables as nested dicts)."""
    deep = _too_deep(raw)
    if deep:
        raise ConfigError(f"{name}: {deep} is nested more than {MAX_DEPTH} levels deep (tables or arrays); no key "
                          "of the schema is")
    bad = _non_finite(raw)
    if bad:
        raise ConfigError(f"{name} has 1 problem(s):\n  {bad}: not a finite number (inf and nan are not allowed)")
    try:
        # Strict: a string where a number belongs ("1") is an error naming the key, never
        # silently converted. Validated as JSON, where strict mode still reads paths from text.
        cfg = PipelineConfig.model_validate_json(json.dumps(raw, default=str), strict=True)
    except ValidationError as e:
        raise ConfigError(f"{name} has {e.error_count()} problem(s):\n{_describe(e)}") from None
    base = (base or Path.cwd()).resolve()
    _resolve_paths(cfg, base)
    _resolve_profiles(cfg, base, Path(name))
    return cfg
