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

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, create_model, model_validator

from edgekiln import stages as registry
from edgekiln.data.config import DataConfig
from edgekiln.engine.config_problems import Problem, from_validation, key_lines, key_name, render
from edgekiln.gates import GATE_RULES
from edgekiln.targets.profiles import ProfileError
from edgekiln.targets.target import EncodingError, IoError, TargetConfig, ToolsMissing
from edgekiln.training.config import DistillConfig, TrainConfig


class ConfigError(Exception):
    """The config file is missing, not TOML, or does not fit the schema; names key paths.
    `problems`: each problem found, all at once (empty for a file that could not be read)."""

    def __init__(self, message: str, problems: list[Problem] | tuple = ()):
        super().__init__(message)
        self.problems = list(problems)


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
    """`[pipeline]`: which stages run, and within how long. `stages` lists them in order (the
    starting stage, the teacher or the given model, may be left out: the section the config
    gives decides); default: all of them."""

    model_config = ConfigDict(extra="forbid")

    stages: list[str] | None = Field(None, min_length=1)
    # The whole run's time budget on this machine: the run is planned first (run --plan), each
    # stage gets its share as a deadline, and auto loops stop there keeping their best epoch
    # (edgekiln.time_budget). None: each loop stops on its own rule.
    max_minutes: float | None = Field(None, gt=0)


class _Pipeline(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # The line of each key in the TOML file the config was read from, for later problems.
    _key_lines: dict[str, int] = PrivateAttr(default_factory=dict)
    _source_name: str | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _a_plan_that_runs(self):
        present = {name for name in type(self).model_fields if getattr(self, name) is not None}
        problems = plan_problems(self.pipeline.stages, present)
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @model_validator(mode="after")
    def _calibration_from_unlabelled_needs_them(self):
        data = getattr(self, "data", None)
        if data is None or data.unlabelled_path is not None or data.unlabelled_shards is not None:
            return self
        for name in type(self).model_fields:  # the section that calibrates INT8 (its stage's own)
            if getattr(getattr(self, name, None), "calibration_from", None) == "unlabelled":
                raise ValueError(f"{name}.calibration_from = 'unlabelled' needs data.unlabelled_path or "
                                 "data.unlabelled_shards (the images to draw the sample from)")
        return self

    @model_validator(mode="after")
    def _unlabelled_images_are_not_mixed(self):
        data, train = getattr(self, "data", None), getattr(self, "train", None)
        if data is None or train is None or not (train.mixup > 0 or train.cutmix > 0):
            return self
        key = "unlabelled_path" if data.unlabelled_path is not None else \
            "unlabelled_shards" if data.unlabelled_shards is not None else None
        if key is not None:
            raise ValueError(f"train.mixup and train.cutmix mix labels, which data.{key} images do not "
                             f"have: set both to 0, or leave out {key}")
        return self

    @model_validator(mode="after")
    def _unique_target_names(self):
        _first_duplicate([t.name for t in self.targets or []], "name")
        return self


def plan_problems(listed: list[str] | None, present: set[str]) -> list[str]:
    """What keeps the stages `listed` from running on a config that gives the sections
    `present`: the plan's own error (PlanError), or each planned stage whose section is missing."""
    given = {s.section for s in registry.registered() if s.starts and s.section in present}
    try:
        run = registry.plan(listed, given)
    except registry.PlanError as e:
        return [str(e)]
    return [f"stage {stage.name} runs but the config has no [{stage.section}]" for stage in run.stages
            if stage.section and stage.default is registry.REQUIRED and stage.section not in present]


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
    (a target by its name: "targets.android-cpu"), for the sections' own hooks
    (resolve_paths, input_paths, check_inputs)."""
    for name in type(cfg).model_fields:
        value = getattr(cfg, name)
        if isinstance(value, list):
            yield from ((f"{name}.{item.name}" if isinstance(getattr(item, "name", None), str) else f"{name}[{i}]",
                         item) for i, item in enumerate(value))
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


def _target_problems(cfg, raw: dict, base: Path) -> list[Problem]:
    """Load every target's latency profile now, so that a bad one is reported with the rest
    of the config's problems, before any work. Without a valid `cfg` (other keys are wrong),
    each target that fits the schema on its own is still checked."""
    if cfg is not None:
        targets = list(enumerate(cfg.targets or []))
    else:
        targets = []
        for i, item in enumerate(raw.get("targets") if isinstance(raw.get("targets"), list) else []):
            try:  # a target that does not fit the schema is already reported
                targets.append((i, TargetConfig.model_validate_json(json.dumps(item, default=str), strict=True)))
            except ValidationError:
                continue
    problems = []
    for i, target in targets:
        try:
            target.resolve(base)
        except ProfileError as e:
            key = ("encoding" if isinstance(e, EncodingError) else "io" if isinstance(e, IoError) else
                   "format" if isinstance(e, ToolsMissing) and target.profile is None else "profile")
            given = getattr(target, key) if key != "profile" else target.profile
            problems.append(Problem(key_name(("targets", i, key), raw), str(e),
                                    given if isinstance(given, (str, list)) else None))
    if cfg is not None and not problems:
        try:
            _first_duplicate([t.artifact_name for t in cfg.targets or []], "artifact")
        except ValueError as e:
            problems.append(Problem("", str(e)))
    return problems


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
    "clip: teachers have a text tower and a tokenizer that knows words",
    "train.randaugment parses as a timm RandAugment string",
)


def check_files(cfg) -> None:
    """Every file and folder the config names exists, each section's own checks of what it
    reads hold, and every measuring device answers; ConfigError lists every problem found."""
    problems = []
    for key, section in sections(cfg):
        if hasattr(section, "check_inputs"):
            try:
                section.check_inputs()
            except ValueError as e:
                problems.extend(Problem.from_message(f"{key}.{line}") for line in str(e).splitlines())
    reported = {p.key for p in problems}
    problems.extend(Problem(key, f"{path} does not exist") for key, path, _ in input_paths(cfg)
                    if not path.exists() and key not in reported)
    problems.extend(device_problems(cfg))
    if problems:
        raise ConfigError(render(getattr(cfg, "_source_name", None) or "the config", problems,
                                 getattr(cfg, "_key_lines", None)), problems)


def device_problems(cfg) -> list[Problem]:
    """Every target whose profile measures on a device (adb, ssh) reaches it now, unless it
    allows an estimate: a phone left unplugged stops the run here, not after the training."""
    from edgekiln.targets.errors import DeviceUnreachable
    from edgekiln.targets.runners import check_reachable

    problems = []
    for target in cfg.targets or []:
        profile = target.effective_profile
        if target.allow_estimate or profile.runner.kind not in ("adb", "ssh"):
            continue
        try:
            check_reachable(profile)
        except DeviceUnreachable as e:
            problems.append(Problem(
                f"targets.{target.name}", f"cannot reach the device of profile {profile.name} "
                f"({profile.runner.kind} runner): {e}; attach it, or set allow_estimate = true on the target to "
                "estimate its latency instead (the report says so)"))
    return problems


def load_config(path: str | Path) -> BaseModel:
    """Read and validate a pipeline TOML file; ConfigError lists every problem by key path.
    Relative paths in it are relative to the file."""
    path = Path(path)
    return config_from_text(read_config_text(path), base=path.resolve().parent, name=str(path))


def read_config_text(path: Path) -> str:
    """A config file's text: UTF-8, with or without the byte-order mark some editors write
    (TOML's reader would take it for a stray character at line 1, column 1)."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        configs = sorted(p.name for p in Path(path).glob("*.toml"))[:6]
        holds = (f"it holds {', '.join(configs)}: give one of them" if configs else
                 "it holds no .toml file: write one with `edgekiln init FOLDER`")
        if (Path(path) / "config.toml").is_file():
            holds = f"it holds the config a command wrote: `edgekiln run {Path(path) / 'config.toml'}`"
        elif (Path(path) / "manifest.json").is_file():
            holds = ("it is a run's output folder: run the config it was made from (manifest.json's `config`), or "
                     "read it with `edgekiln report`")
        raise ConfigError(f"config file {path} is a folder, not a config file: {holds}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {e.start}: {e.reason}): TOML files are UTF-8; "
                          "save it as UTF-8") from None


MAX_DEPTH = 16  # tables and arrays nested deeper than any config needs (the schema has 4 levels)


def config_from_text(text: str, base: Path | None = None, name: str = "config") -> BaseModel:
    """Validate TOML text; relative paths are relative to `base` (default: the working directory).
    Problems are reported with the line they are on."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{name} is not valid TOML: {e}") from None
    except RecursionError:
        raise ConfigError(f"{name}: tables or arrays nested too deeply to read (a config needs at most "
                          f"{MAX_DEPTH} levels)") from None
    return config_from_dict(raw, base=base, name=name, text=text)


def config_from_dict(raw: dict, base: Path | None = None, name: str = "config", text: str | None = None) -> BaseModel:
    """Validate a config given as a dict (the TOML's tables as nested dicts; `text`: the TOML
    they were read from, for line numbers). ConfigError lists every problem at once."""
    deep = _too_deep(raw)
    if deep:
        raise ConfigError(f"{name}: {deep} is nested more than {MAX_DEPTH} levels deep (tables or arrays); no key "
                          "of the schema is")
    lines = key_lines(text, raw) if text else {}
    bad = _non_finite(raw)
    if bad:
        problems = [Problem(bad, "not a finite number (inf and nan are not allowed)")]
        raise ConfigError(render(name, problems, lines), problems)
    model = config_model()
    cfg, problems = None, []
    try:
        # Strict: a string where a number belongs ("1") is an error naming the key, never
        # silently converted. Validated as JSON, where strict mode still reads paths from text.
        cfg = model.model_validate_json(json.dumps(raw, default=str), strict=True)
    except ValidationError as e:
        problems = from_validation(e, model, raw)
        if not any(p.key == "" for p in problems):  # the plan was not checked: other keys failed first
            pipeline = raw.get("pipeline") if isinstance(raw.get("pipeline"), dict) else {}
            listed = pipeline.get("stages")
            if isinstance(listed, list) and all(isinstance(n, str) for n in listed) or listed is None:
                present = {key for key, value in raw.items() if isinstance(value, (dict, list))}
                problems += [Problem.from_message(m) for m in plan_problems(listed, present)]
    base = (base or Path.cwd()).resolve()
    if cfg is not None:
        _resolve_paths(cfg, base)
    problems += _target_problems(cfg, raw, base)
    if problems:
        raise ConfigError(render(name, problems, lines), problems)
    cfg._key_lines, cfg._source_name = lines, name
    return cfg
