"""The pipeline's TOML config: one schema, validated in full before any work starts.

The schema is assembled from the registered stages (each declares its own section, stages/)
and the libraries' sections ([data], [train], [distill]); `[budget.max_drop]` has one key per
stage with a budget. `PipelineConfig`, `BudgetConfig` and `StageBudgets` are rebuilt when a
stage is registered or removed."""

from __future__ import annotations

import functools
import json
import math
import tomllib
from pathlib import Path
from typing import Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from edgekiln import stages as registry
from edgekiln.data.config import DataConfig
from edgekiln.gates import GATE_RULES
from edgekiln.targets.profiles import ProfileError
from edgekiln.targets.target import EncodingError, IoError
from edgekiln.training.config import DistillConfig, TrainConfig


class ConfigError(Exception):
    """The config file is missing, not TOML, or does not fit the schema; names key paths."""


# Sections of the libraries every stage may read, first in the schema.
LIBRARY_SECTIONS = {"data": DataConfig, "train": TrainConfig, "distill": DistillConfig}


class _Budget(BaseModel):
    """`[budget]`: accuracy points any stage or artifact may lose against the teacher."""

    model_config = ConfigDict(extra="forbid")

    max_drop_total: float = Field(5.0, ge=0.0, le=100.0)
    # How the release gates (artifacts on the test split) treat the drop's 95% interval:
    # "point" decides on the drop itself; "strict" passes only when the interval's upper end
    # is within budget; "lenient" fails only when its lower end is over budget.
    gate: Literal[GATE_RULES] = "point"

    def cache_view(self) -> dict:
        """What enters a stage's cache key: how the release gates read intervals changes no
        stage's result, and a stage budget left unset is no budget (registering a stage adds
        its key to [budget.max_drop] without re-running the others)."""
        view = self.model_dump(exclude={"gate"})
        view["max_drop"] = {k: v for k, v in view.get("max_drop", {}).items() if v is not None}
        return view


class ReleaseConfig(BaseModel):
    """`[release]`: how far a run may regress against the last release before `edgekiln diff`
    fails (exit 1). Read from the new run's manifest; the diff's flags override it."""

    model_config = ConfigDict(extra="forbid")

    max_accuracy_drop: float = Field(1.0, ge=0.0, le=100.0)  # points of test accuracy
    max_latency_increase: float = Field(10.0, ge=0.0)  # percent, p50 and p90
    max_size_increase: float = Field(10.0, ge=0.0)  # percent of the artifact's bytes
    # A budget that could not be checked (not measured, or only an order-of-magnitude
    # estimate) fails the run instead of passing it "with N budgets not checked".
    require_checked: bool = False


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


class PlanConfig(BaseModel):
    """`[pipeline]`: which stages run. `stages` lists them in order (the starting stage, the
    teacher or the given model, may be left out: the section the config gives decides);
    default: all of them."""

    model_config = ConfigDict(extra="forbid")

    stages: list[str] | None = Field(None, min_length=1)


class _Pipeline(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _a_plan_that_runs(self):
        run = plan_of(self)  # PlanError (a ValueError) names what is wrong
        for stage in run.stages:
            if stage.section and getattr(self, stage.section) is None:
                raise ValueError(f"stage {stage.name} runs but the config has no [{stage.section}]")
        return self

    @model_validator(mode="after")
    def _unique_target_names(self):
        _first_duplicate([t.name for t in self.targets or []], "name")
        return self


def plan_of(cfg) -> registry.Plan:
    """The stages `cfg` runs, in order (the first is the reference), and why the others do not."""
    given = {s.section for s in registry.registered() if s.starts and getattr(cfg, s.section, None) is not None}
    return registry.plan(cfg.pipeline.stages, given)


@functools.lru_cache(maxsize=8)
def _models(generation: int) -> dict[str, type[BaseModel]]:
    stages = registry.registered()
    # `[budget.max_drop]`: accuracy points a stage may lose against the stage before it.
    stage_budgets = create_model(
        "StageBudgets", __config__=ConfigDict(extra="forbid"),
        **{s.name: (float | None, Field(None, ge=0.0, le=100.0)) for s in stages if s.budgeted})
    budget = create_model("BudgetConfig", __base__=_Budget, __doc__=_Budget.__doc__,
                          max_drop=(stage_budgets, stage_budgets()))
    fields: dict = {name: (schema, schema()) for name, schema in LIBRARY_SECTIONS.items()}
    fields["pipeline"] = (PlanConfig, PlanConfig())
    for stage in stages:
        if stage.section and stage.section not in fields:  # a section only a planned stage needs may be absent
            fields[stage.section] = ((stage.schema | None, None) if stage.default is registry.REQUIRED
                                     else (stage.schema, stage.default))
    fields.update(budget=(budget, budget()), release=(ReleaseConfig, ReleaseConfig()), card=(CardConfig, CardConfig()))
    pipeline = create_model("PipelineConfig", __base__=_Pipeline, **fields)
    return {"StageBudgets": stage_budgets, "BudgetConfig": budget, "PipelineConfig": pipeline}


def config_model() -> type[BaseModel]:
    """The config's schema for the stages registered now."""
    return _models(registry.generation())["PipelineConfig"]


def __getattr__(name: str):
    if name in ("PipelineConfig", "BudgetConfig", "StageBudgets"):
        return _models(registry.generation())[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def sections(cfg) -> Iterator[tuple[str, object]]:
    """(key, value) of every section of `cfg`, and of every item of a section that is a list
    ("targets[0]"), for the sections' own hooks (resolve_paths, input_paths, check_inputs)."""
    for name in type(cfg).model_fields:
        value = getattr(cfg, name)
        if isinstance(value, list):
            yield from ((f"{name}[{i}]", item) for i, item in enumerate(value))
        else:
            yield name, value


def input_paths(cfg) -> list[tuple[str, Path, bool]]:
    """(key, path, is a folder of data) of every file and folder the config reads: data
    folders and shards, checkpoints, the calibration folder, profile files."""
    return [(f"{key}.{sub}", path, is_data) for key, section in sections(cfg)
            if hasattr(section, "input_paths") for sub, path, is_data in section.input_paths()]


def _first_duplicate(values: list[str], what: str) -> None:
    seen: dict[str, int] = {}
    for i, value in enumerate(values):
        if value in seen:
            raise ValueError(f"targets[{i}] has the same {what} {value!r} as targets[{seen[value]}]")
        seen[value] = i


def _resolve_profiles(cfg, base: Path, path: Path) -> None:
    """Load every target's latency profile now, so a bad one stops the run before any work."""
    for i, target in enumerate(cfg.targets or []):
        try:
            target.resolve(base)
        except EncodingError as e:
            raise ConfigError(f"{path}: targets[{i}].encoding: {e}") from None
        except IoError as e:
            raise ConfigError(f"{path}: targets[{i}].io: {e}") from None
        except ProfileError as e:
            raise ConfigError(f"{path}: targets[{i}].profile: {e}") from None
    try:
        _first_duplicate([t.artifact_name for t in cfg.targets or []], "artifact")
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


def _resolve_paths(cfg, base: Path) -> None:
    """Relative paths in the config are relative to the config file, not the working directory."""
    for _, section in sections(cfg):
        if hasattr(section, "resolve_paths"):
            section.resolve_paths(base)


# What `validate` cannot check without importing torch (timm and transformers need it): the
# run's preflight checks these before any work, with the same exit code.
DEFERRED_CHECKS = (
    "timm architecture names (teacher.candidates, student.arch, model.arch) and their pretrained weights",
    "teacher and model checkpoints load into their architecture (model: its class count fits the data)",
    "train.randaugment parses as a timm RandAugment string",
)


def check_files(cfg) -> None:
    """Every file and folder the config names exists, and each section's own checks of what
    it reads hold (ConfigError naming the key)."""
    for key, section in sections(cfg):
        if hasattr(section, "check_inputs"):
            try:
                section.check_inputs()
            except ValueError as e:
                raise ConfigError(f"{key}.{e}") from None
    for key, path, _ in input_paths(cfg):
        if not path.exists():
            raise ConfigError(f"{key}: {path} does not exist")
    check_devices(cfg)


def check_devices(cfg) -> None:
    """Every target whose profile measures on a device (adb, ssh) reaches it now, unless it
    allows an estimate: a phone left unplugged stops the run here, not after the training."""
    from edgekiln.targets.errors import DeviceUnreachable
    from edgekiln.targets.runners import check_reachable

    for target in cfg.targets or []:
        profile = target.effective_profile
        if target.allow_estimate or profile.runner.kind not in ("adb", "ssh"):
            continue
        try:
            check_reachable(profile)
        except DeviceUnreachable as e:
            raise ConfigError(f"target {target.name!r} (profile {profile.name}, {profile.runner.kind} runner): cannot "
                              f"reach its device: {e}; attach it, or set allow_estimate = true on the target to "
                              "estimate its latency instead (the report says so)") from None


def load_config(path: str | Path) -> BaseModel:
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


def config_from_text(text: str, base: Path | None = None, name: str = "config") -> BaseModel:
    """Validate TOML text; relative paths are relative to `base` (default: the working directory)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{name} is not valid TOML: {e}") from None
    except RecursionError:
        raise ConfigError(f"{name}: tables or arrays nested too deeply to read (a config needs at most "
                          f"{MAX_DEPTH} levels)") from None
    return config_from_dict(raw, base=base, name=name)


def config_from_dict(raw: dict, base: Path | None = None, name: str = "config") -> BaseModel:
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
        cfg = config_model().model_validate_json(json.dumps(raw, default=str), strict=True)
    except ValidationError as e:
        raise ConfigError(f"{name} has {e.error_count()} problem(s):\n{_describe(e)}") from None
    base = (base or Path.cwd()).resolve()
    _resolve_paths(cfg, base)
    _resolve_profiles(cfg, base, Path(name))
    return cfg
