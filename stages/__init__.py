"""The stages: each one package here that declares a `Stage`, as each format is one file
under targets/formats/ that declares a `Format`.

A stage's package owns everything about it: its name, its config section and schema, the
other sections it reads, the results it takes (by the parameter names of its `run`), what
enters its cache key, whether `[budget.max_drop]` limits it, the checks to run before any
stage, and the section it adds to manifest.json and the reports. The DAG, the config schema,
the budget table and the reports are built from the registered stages; nothing else names
one. Stages run in `order`; each takes the result of the one before it as `previous` and the
reference stage's (the teacher, which every drop is measured against) as `reference`.

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

__all__ = ["Stage", "Check", "StageReport", "REQUIRED", "register", "unregister", "registered", "stage_named",
           "reference", "publisher", "inputs_of", "generation", "checks"]

REQUIRED = object()  # a section the config must give (no default)

# The results a stage's `run` may take, by parameter name: the stage before it, and the
# reference stage's (every accuracy drop is measured against it).
INPUT_ROLES = ("previous", "reference")


def resolve(target):
    """A function or object given as itself or as "package.module:name" (imported now)."""
    if not isinstance(target, str):
        return target
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Check:
    """A check run before any stage, cached like one. `run(data, cfg)` returns its record and
    the config sections it narrows ({section: new value}); `inputs(cfg)` is what its result
    depends on (its cache key, with the data and the code)."""

    name: str
    run: Callable | str
    inputs: Callable | str

    def __call__(self, data, cfg):
        return resolve(self.run)(data, cfg)

    def key_inputs(self, cfg):
        return resolve(self.inputs)(cfg)

    @property
    def module(self) -> str:
        return self.run.partition(":")[0] if isinstance(self.run, str) else self.run.__module__


@dataclass(frozen=True)
class Stage:
    """One stage of the DAG.

    `run(data, config, workdir, *, previous=, reference=) -> StageResult`: `config` maps each
    section it reads to its value; it names in its parameters the results it takes."""

    name: str
    order: int  # stages run by increasing order
    run: Callable | str
    section: str | None = None  # its own config section ([teacher]); None: it has none
    schema: Any = None  # that section's type (a pydantic model, or list[...] of one)
    default: Any = REQUIRED  # that section's value when the config leaves it out
    reads: tuple[str, ...] = ()  # the other config sections it reads ([train], [budget], ...)
    preflight: Callable | str | None = None  # cheap checks of its sections, before any work
    # Sections it reads that cannot change its result under this config: left out of its key.
    unkeyed: Callable[[dict], set[str]] | None = None
    # The latency profiles its sections name, whose content (not just name) enters its key:
    # (sections) -> {key: profile or list of profiles}.
    profiles: Callable[[dict], dict] | None = None
    budgeted: bool = False  # `[budget.max_drop] <name>` limits its drop against the stage before it
    reference: bool = False  # every accuracy drop is measured against this stage (the teacher)
    publishes: bool = False  # its artifacts are the release: gated on test, published
    checks: tuple[Check, ...] = ()  # run before any stage (e.g. the student converts to every target)
    # Its part of the manifest and the reports (or "module:NAME" of one, imported when read).
    report: StageReport | str = field(default_factory=StageReport)

    @property
    def sections(self) -> tuple[str, ...]:
        """Every config section it reads: its own first."""
        return ((self.section,) if self.section else ()) + tuple(s for s in self.reads if s != self.section)

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
    if sum(s.reference for s in stages) != 1 or sum(s.publishes for s in stages) != 1:
        raise RuntimeError("exactly one registered stage must be the reference and one must publish")
    return tuple(stages)


def stage_named(name: str) -> Stage:
    _discover()
    return _REGISTRY[name]


def reference() -> Stage:
    return next(s for s in registered() if s.reference)


def publisher() -> Stage:
    return next(s for s in registered() if s.publishes)


def inputs_of(stage: Stage) -> dict[str, str]:
    """{parameter: stage name} of the results `stage.run` takes (previous, reference)."""
    order = registered()
    position = order.index(stage)
    wanted = [p for p in inspect.signature(stage.function).parameters if p in INPUT_ROLES]
    out = {}
    for role in wanted:
        if role == "previous":
            if position == 0:
                raise RuntimeError(f"stage {stage.name} takes `previous` but runs first")
            out[role] = order[position - 1].name
        else:
            out[role] = reference().name
    return out


def checks() -> tuple[Check, ...]:
    """The checks every stage declares, in stage order: run before any stage."""
    return tuple(check for stage in registered() for check in stage.checks)
