"""The staged DAG: each node names its function, the config sections it reads, its inputs,
and what the runner does with it (the reference every drop is measured against, the node
whose artifacts are published). The runner reads these flags; it knows no node by name.

Before the stages, the graph's checks run (cached like stages, no training): today the
convertibility pre-check, which may narrow the config (drop a student candidate)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from edgekiln.stages import distill, export, precheck, prune, quantize, teacher
from edgekiln.stages.config import BUDGETED_STAGES


@dataclass(frozen=True)
class Node:
    name: str
    run: Callable  # (data, {section: config}, {input: StageResult}, workdir) -> StageResult
    sections: tuple[str, ...]  # config sections the stage reads: part of its cache key
    inputs: tuple[str, ...]  # upstream nodes whose results it takes
    preflight: Callable | None = None  # cheap checks of its own section, before any work
    # Sections the stage reads that cannot change its result under this config: left out of its key.
    unkeyed: Callable[[dict], set[str]] | None = None
    reference: bool = False  # every accuracy drop is measured against this node (the teacher)
    publishes: bool = False  # its result's artifacts are the release: gated on test, published

    @property
    def budgeted(self) -> bool:
        """Gated against the stage before it by `[budget.max_drop]` (stages/config.py declares which)."""
        return self.name in BUDGETED_STAGES


@dataclass(frozen=True)
class Check:
    """A check run before any stage, cached like one. `run(data, cfg)` returns its record
    and the config sections it narrows ({section: new value}); `inputs(cfg)` is what its
    result depends on (its cache key, with the data and the code)."""

    name: str
    run: Callable
    inputs: Callable


STAGES: tuple[Node, ...] = (
    Node("teacher", teacher.run, ("teacher", "train"), (), preflight=teacher.preflight, reference=True),
    # [budget] decides which of several candidate students wins.
    Node("distill", distill.run, ("student", "distill", "train", "budget"), ("teacher",),
         preflight=distill.preflight, unkeyed=distill.unkeyed),
    # [budget] decides where stepwise pruning stops, and when an auto recovery may stop.
    Node("prune", prune.run, ("prune", "distill", "train", "budget"), ("distill", "teacher"),
         preflight=prune.preflight, unkeyed=prune.unkeyed),
    # [budget] decides which layers the INT8 simulation keeps in float, and when auto QAT may stop.
    Node("quantize", quantize.run, ("quantize", "distill", "train", "budget"), ("prune", "teacher"),
         preflight=quantize.preflight, unkeyed=quantize.unkeyed),
    # [budget] decides which layers accuracy-aware quantization keeps in float.
    Node("export", export.run, ("targets", "quantize", "budget"), ("quantize", "teacher"),
         unkeyed=export.unkeyed, publishes=True),
)

CHECKS: tuple[Check, ...] = (Check("precheck", precheck.check, precheck.inputs),)

REFERENCE = next(node.name for node in STAGES if node.reference)
PUBLISHER = next(node.name for node in STAGES if node.publishes)
