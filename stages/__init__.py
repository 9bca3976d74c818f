"""The stages: each one package here that declares a `Stage`, as each format is one file
under targets/formats/ that declares a `Format`.

A stage's package owns everything about it: its name, its config section and schema, the
other sections it reads, the results it takes (by the parameter names of its `run`), what
enters its cache key, whether `[budget.max_drop]` limits it, the checks to run before any
stage, and the section it adds to manifest.json and the reports. The DAG, the config schema,
the budget table and the reports are built from the registered stages; nothing else names
one. Which stages run is the config's plan (`[pipeline] stages`, `plan`): they run in
`order`, each taking the result of the one before it as `previous` and the first one's (the
reference every drop is measured against: the teacher, or the given model) as `reference`.

The declarations import no torch (a config validates in well under two seconds): `run` and
`preflight` may be given as "module:function", imported when the stage runs.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable

from edgekiln.stages.report import StageReport
from edgekiln.system.errors import did_you_mean

__all__ = ["Stage", "Check", "Plan", "PlanError", "StageReport", "Sections", "REQUIRED", "register", "unregister",
           "registered", "stage_named", "publisher", "plan", "inputs_of", "generation"]

REQUIRED = object()  # a section the config must give (no default)

# The results a stage's `run` may take, by parameter name: the stage before it in the plan,
# and the plan's first stage's (the reference: every accuracy drop is measured against it).
INPUT_ROLES = ("previous", "reference")


def resolve(target):
    """A function or object given as itself or as "package.module:name" (imported now)."""
    if not isinstance(target, str):
        return target
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


class Sections:
    """The config sections a stage reads, each its typed model, by attribute: `config.quantize`
    is the run's QuantizeConfig, `config.budget` its [budget] (None where the config gives
    none). A stage's package declares a subclass annotating each section it reads (its cache
    key holds exactly those); reading one it did not declare is an AttributeError naming it.
    Tests build one by keyword: `QuantizeSections(quantize=cfg, budget=budget)`."""

    def __init__(self, **sections: Any):
        declared = _declared(type(self))
        unknown = sorted(set(sections) - set(declared)) if declared else []
        if unknown:
            raise TypeError(f"{type(self).__name__} reads no section {', '.join(unknown)} (it reads "
                            f"{', '.join(declared)})")
        self.__dict__.update(sections)

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(f"config section [{name}] is not one {type(self).__name__} was given: a stage reads the "
                             "sections it declares (its package's Sections), which are its cache key")

    def __contains__(self, name: str) -> bool:
        """Whether it was given section `name` (a test may give a hook only what it reads)."""
        return name in vars(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


def _declared(sections_type: type) -> tuple[str, ...]:
    """The sections a Sections subclass annotates, in order (its own section first)."""
    names: list[str] = []
    for klass in reversed(sections_type.__mro__):
        names += [n for n in getattr(klass, "__annotations__", {}) if n not in names]
    return tuple(names)


@dataclass(frozen=True)
class Check:
    """A check run before any stage, cached like one. `run(data, cfg)` returns its record and
    the config sections it narrows ({section: {key: new value}}, only the keys it changes);
    `inputs(cfg)` is what its result depends on (its cache key, with the data and the code).
    `refresh(record, cfg)`, when given, returns the record as the config in force names
    things (a cached record keeps what it measured, not the names of the run that wrote it)."""

    name: str
    run: Callable | str
    inputs: Callable | str
    refresh: Callable | str | None = None

    def __call__(self, data, cfg):
        return resolve(self.run)(data, cfg)

    def refreshed(self, record: dict, cfg) -> dict:
        return record if self.refresh is None else resolve(self.refresh)(record, cfg)

    def key_inputs(self, cfg):
        return resolve(self.inputs)(cfg)

    @property
    def module(self) -> str:
        return self.run.partition(":")[0] if isinstance(self.run, str) else self.run.__module__


@dataclass(frozen=True)
class Stage:
    """One stage of the DAG.

    `run(data, config, workdir, *, previous=, reference=) -> StageResult`: `config` holds each
    section it reads, typed (`reads`: a Sections subclass annotating them, or their names);
    it names in its parameters the results it takes."""

    name: str
    order: int  # stages run by increasing order
    run: Callable | str
    section: str | None = None  # its own config section ([teacher]); None: it has none
    schema: Any = None  # that section's type (a pydantic model, or list[...] of one)
    default: Any = REQUIRED  # that section's value when the config leaves it out
    # The config sections it reads ([train], [budget], ...): a Sections subclass annotating
    # each with its type (its own section among them), or the other sections' names.
    reads: type[Sections] | tuple[str, ...] = ()
    preflight: Callable | str | None = None  # cheap checks of its sections, before any work
    # Sections it reads that cannot change its result under this config: left out of its key.
    unkeyed: Callable[[dict], set[str]] | None = None
    # The latency profiles its sections name, whose content (not just name) enters its key:
    # (sections) -> {key: profile or list of profiles}.
    profiles: Callable[[dict], dict] | None = None
    # formats(sections) -> the artifact formats its work uses under this config (a converter
    # it runs, an INT8 simulation): only their code enters its key. None: every format's.
    formats: Callable[[dict], set[str]] | None = None
    trains: bool = False  # it has training loops that `[pipeline] max_minutes` may cut (that enters its key)
    budgeted: bool = False  # `[budget.max_drop] <name>` limits its drop against the stage before it
    # It begins a plan: it takes no `previous`, and its model is the reference every drop is
    # measured against. A plan starts with the one starting stage whose section the config gives.
    starts: bool = False
    follows: str | None = None  # the stage that must run directly before it (its `previous`)
    title: str | None = None  # what the reports call it (default: its name)
    publishes: bool = False  # its artifacts are the release: gated on test, published
    checks: tuple[Check, ...] = ()  # run before any stage (e.g. the student converts to every target)
    # refresh(result, sections, reference accuracy): re-derive the parts of its record that
    # depend on sections left out of its key (a budget's verdicts), for a cached result too
    refresh: Callable | str | None = None
    # plan(cfg, model) -> ([planning.Work], model): the loops and conversions it will run on
    # `model` (the architecture the stage before hands it, and its cost scale), and the model
    # it hands on (`run --plan`)
    plan: Callable | str | None = None
    # Its part of the manifest and the reports (or "module:NAME" of one, imported when read).
    report: StageReport | str = field(default_factory=StageReport)

    @property
    def sections(self) -> tuple[str, ...]:
        """Every config section it reads: its own first."""
        reads = _declared(self.reads) if isinstance(self.reads, type) else self.reads
        return ((self.section,) if self.section else ()) + tuple(s for s in reads if s != self.section)

    def sections_of(self, cfg) -> Sections:
        """The sections it reads of the run's config `cfg`, typed (what its hooks are given)."""
        kind = self.reads if isinstance(self.reads, type) else Sections
        return kind(**{s: getattr(cfg, s) for s in self.sections})

    @property
    def label(self) -> str:
        return self.title or self.name

    @property
    def function(self) -> Callable:
        return resolve(self.run)

    @property
    def reporting(self) -> StageReport:
        return resolve(self.report)

    @property
    def module(self) -> str:
        """The module that does its work (its cache key holds that module's code)."""
        return self.run.partition(":")[0] if isinstance(self.run, str) else self.run.__module__


_REGISTRY: dict[str, Stage] = {}
_DISCOVERED = False


def register(stage: Stage) -> Stage:
    """Add `stage` to the DAG (a stage package does this on import; a test may do it too)."""
    _discover()
    if stage.name in _REGISTRY and _REGISTRY[stage.name] is not stage:
        raise ValueError(f"a stage named {stage.name!r} is already registered")
    _REGISTRY[stage.name] = stage
    _changed()
    return stage


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)
    _changed()


_GENERATION = [0]


def generation() -> int:
    """A number that changes whenever a stage is registered or removed (what is built from
    the registry, the config schema, is rebuilt then)."""
    _discover()
    return _GENERATION[0]


def _changed() -> None:
    _GENERATION[0] += 1


def _discover() -> None:
    """Import every stage package here once: each registers its stage."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    for module in pkgutil.iter_modules(__path__):
        if module.ispkg:
            importlib.import_module(f"{__name__}.{module.name}")


def registered() -> tuple[Stage, ...]:
    """Every stage, in the order they run."""
    _discover()
    stages = sorted(_REGISTRY.values(), key=lambda s: s.order)
    if not any(s.starts for s in stages) or sum(s.publishes for s in stages) != 1:
        raise RuntimeError("at least one registered stage must start a plan, and exactly one must publish")
    return tuple(stages)


def stage_named(name: str) -> Stage:
    _discover()
    return _REGISTRY[name]


def publisher() -> Stage:
    return next(s for s in registered() if s.publishes)


class PlanError(ValueError):
    """A plan that cannot run (an unknown stage, stages out of order, a missing section)."""


@dataclass(frozen=True)
class Plan:
    """The stages one config runs, in order: the first is the reference. `skipped` says why
    each other registered stage does not run."""

    stages: tuple[Stage, ...]
    skipped: dict[str, str]

    @property
    def reference(self) -> Stage:
        return self.stages[0]

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.stages]

    def checks(self) -> tuple[Check, ...]:
        """The checks its stages declare, in stage order: run before any stage."""
        return tuple(check for stage in self.stages for check in stage.checks)

    def to_dict(self) -> dict:
        return {"stages": self.names, "reference": self.reference.name, "reference_title": self.reference.label,
                "skipped": [{"stage": name, "why": why} for name, why in self.skipped.items()]}


def plan(listed: list[str] | None, given: set[str]) -> Plan:
    """The stages to run: `listed` (`[pipeline] stages`; None: every stage that does not
    start a plan), after the starting stage whose section is in `given` (the sections the
    config gives). PlanError names what is wrong: an unknown or repeated stage, stages out of
    order, two starting stages, a stage without the one it follows, no publishing stage."""
    stages = registered()
    by_name = {s.name: s for s in stages}
    starters = [s for s in stages if s.starts]
    for name in listed or []:
        if name not in by_name:
            raise PlanError(f"pipeline.stages: unknown stage {name!r}{did_you_mean(name, by_name)}; the stages: "
                            + ", ".join(by_name))
    if listed is not None and len(set(listed)) != len(listed):
        raise PlanError(f"pipeline.stages: {next(n for n in listed if listed.count(n) > 1)!r} is listed twice")
    if listed is not None and [by_name[n].order for n in listed] != sorted(by_name[n].order for n in listed):
        raise PlanError(f"pipeline.stages: {listed} is out of order; the stages run in this order: "
                        + ", ".join(by_name))
    chosen = [s for s in starters if s.section in given]
    listed_starters = [by_name[n] for n in listed or [] if by_name[n].starts]
    if len(chosen) > 1:
        raise PlanError(f"the config gives both [{chosen[0].section}] and [{chosen[1].section}]: a run starts from one "
                        f"({chosen[0].label} or {chosen[1].label}); leave out the other")
    if listed_starters and (not chosen or listed_starters[0] is not chosen[0]):
        raise PlanError(f"pipeline.stages lists {listed_starters[0].name}, which needs "
                        f"[{listed_starters[0].section}]" + (f" (this config starts from [{chosen[0].section}])"
                                                              if chosen else ""))
    if not chosen:
        raise PlanError("the config gives none of " + ", ".join(f"[{s.section}] ({s.label})" for s in starters)
                        + ": a run starts from one of them")
    start = chosen[0]
    names = [n for n in listed if not by_name[n].starts] if listed is not None else [
        s.name for s in stages if not s.starts]
    run = (start, *(by_name[n] for n in names))
    for i, stage in enumerate(run[1:], 1):
        if stage.follows is not None and run[i - 1].name != stage.follows:
            raise PlanError(f"pipeline.stages: {stage.name} needs {stage.follows} directly before it (it takes "
                            f"{stage.follows}'s result), after {run[i - 1].name}")
    if not any(stage.publishes for stage in run):
        raise PlanError(f"pipeline.stages must include {publisher().name}: its artifacts are what a run ships")
    skipped = {}
    for stage in stages:
        if stage in run:
            continue
        if stage.starts:
            skipped[stage.name] = f"the run starts from {start.label} ([{start.section}])"
        else:
            skipped[stage.name] = "not in pipeline.stages"
    return Plan(run, skipped)


def inputs_of(stage: Stage, run: Plan) -> dict[str, str]:
    """{parameter: stage name} of the results `stage.run` takes in `run`: the stage before
    it (previous) and the plan's first (reference)."""
    position = run.stages.index(stage)
    wanted = [p for p in inspect.signature(stage.function).parameters if p in INPUT_ROLES]
    out = {}
    for role in wanted:
        if role == "previous":
            if position == 0:
                raise RuntimeError(f"stage {stage.name} takes `previous` but runs first")
            out[role] = run.stages[position - 1].name
        else:
            out[role] = run.reference.name
    return out
