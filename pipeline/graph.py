"""The staged DAG: each node names its function, the config sections it reads and its inputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from edgekiln.stages import distill, export, prune, quantize, teacher


@dataclass(frozen=True)
class Node:
    name: str
    run: Callable  # (data, {section: config}, {input: StageResult}, workdir) -> StageResult
    sections: tuple[str, ...]  # config sections the stage reads: part of its cache key
    inputs: tuple[str, ...]  # upstream nodes whose results it takes
    preflight: Callable | None = None  # cheap checks of its own section, before any work
    budgeted: bool = True  # gated against the stage before it (the teacher is the reference)
    # Sections the stage reads that cannot change its result under this config: left out of its key.
    unkeyed: Callable[[dict], set[str]] | None = None


STAGES: tuple[Node, ...] = (
    Node("teacher", teacher.run, ("teacher", "train"), (), preflight=teacher.preflight, budgeted=False),
    # [budget] decides which of several candidate students wins.
    Node("distill", distill.run, ("student", "distill", "train", "budget"), ("teacher",),
         preflight=distill.preflight, unkeyed=distill.unkeyed),
    # [budget] decides where stepwise pruning stops; with one step it only gates the result.
    Node("prune", prune.run, ("prune", "distill", "train", "budget"), ("distill", "teacher"),
         preflight=prune.preflight, unkeyed=lambda c: set() if c["prune"].steps > 1 else {"budget"}),
    Node("quantize", quantize.run, ("quantize", "distill", "train"), ("prune", "teacher"),
         preflight=quantize.preflight, unkeyed=quantize.unkeyed),
    # [budget] decides which layers accuracy-aware quantization keeps in float.
    Node("export", export.run, ("targets", "quantize", "budget"), ("quantize", "teacher"),
         unkeyed=export.unkeyed),
)
