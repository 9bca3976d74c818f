"""Stage `export`: the quantized student to every target's format (ONNX, TFLite, Core ML,
ExecuTorch), each artifact's accuracy measured in its own runtime where this machine has
one and its latency on its profile; the encoding and the layers kept in float chosen on val.
Its artifacts are the release: gated on the test split and published.

This module declares the stage and imports no torch; the work is in `work.py`."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from edgekiln.stages import Sections, REQUIRED, Stage, register
from edgekiln.stages.quantize import QuantizeConfig
from edgekiln.targets.target import TargetConfig


class ExportSections(Sections):
    """What stage `export` reads of the config, each section typed."""

    targets: list[TargetConfig]
    quantize: QuantizeConfig
    budget: Any = None  # [budget] (engine.config.BudgetConfig); None where the config gives none


def unkeyed(config: ExportSections) -> set[str]:
    """[budget] decides the artifacts only when accuracy-aware quantization or a choice of
    encodings may act on it."""
    choosing = any(t.encoding is not None for t in config.targets)
    return set() if config.quantize.accuracy_aware or choosing else {"budget"}


def _profiles(config: ExportSections) -> dict:
    """Every target's profile: its budgets, runner and estimate table are in the key."""
    return {"profiles": [t.effective_profile for t in config.targets]}


def _plan(cfg, model):
    """One conversion and grading per target."""
    from edgekiln.stages.planning import CONVERSION_SECONDS, Work

    return [Work(f"export {t.name} ({t.format})", seconds=CONVERSION_SECONDS.get(t.format, 10.0))
            for t in cfg.targets], model


# Its key holds the targets' formats and the quantize stage's INT8 simulation, which it runs
# (the accuracy-aware search) and whose QAT graph the INT8 artifacts of a QAT model start from.
STAGE = register(Stage(plan=_plan, formats=lambda sections: {t.format for t in sections.targets}
                       | {sections.quantize.simulation},
    name="export", order=50, follows="quantize", run="edgekiln.stages.export.work:run", section="targets",
    schema=Annotated[list[TargetConfig], Field(min_length=1)], default=REQUIRED, reads=ExportSections,
    unkeyed=unkeyed, profiles=_profiles, budgeted=True, publishes=True,
    report="edgekiln.stages.export.report:REPORT"))
