"""edgekiln: image classifier -> distilled, pruned, INT8 mobile artifacts, gated on accuracy.

Kept light on purpose: Python runs this file before any `edgekiln.*` submodule, so the
public API below is imported lazily, on first use.
"""

__version__ = "0.1.0"

_LAZY = {
    "run": "edgekiln.interfaces.api",
    "load": "edgekiln.interfaces.api",
    "FinishedRun": "edgekiln.interfaces.api",
    "check": "edgekiln.interfaces.api",
    "diff": "edgekiln.interfaces.api",
    "report": "edgekiln.interfaces.api",
    "validate": "edgekiln.interfaces.api",
    "bench": "edgekiln.interfaces.api",
    "calibrate_profile": "edgekiln.interfaces.api",
    "RunResult": "edgekiln.interfaces.api",
    "CheckResult": "edgekiln.interfaces.api",
    "ReportFailure": "edgekiln.interfaces.api",
    "ReportError": "edgekiln.interfaces.api",
    "RunDiff": "edgekiln.release.regression",
    "load_config": "edgekiln.engine.config",
    "ConfigError": "edgekiln.engine.config",
    "PipelineConfig": "edgekiln.engine.config",
    "InputError": "edgekiln.errors",
    "run_pipeline": "edgekiln.engine.runner",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgekiln' has no attribute {name!r}")
