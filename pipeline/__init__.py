"""edgekiln: image classifier -> distilled, pruned, INT8 mobile artifacts, gated on accuracy.

Kept light on purpose: Python runs this file before any `edgekiln.*` submodule, so the
public API below is imported lazily, on first use.
"""

__version__ = "0.1.0"

_LAZY = {
    "run": "edgekiln.api",
    "check": "edgekiln.api",
    "diff": "edgekiln.api",
    "report": "edgekiln.api",
    "RunResult": "edgekiln.api",
    "CheckResult": "edgekiln.api",
    "ReportFailure": "edgekiln.api",
    "ReportError": "edgekiln.api",
    "RunDiff": "edgekiln.regression",
    "load_config": "edgekiln.config",
    "ConfigError": "edgekiln.config",
    "PipelineConfig": "edgekiln.config",
    "InputError": "edgekiln.stages.errors",
    "run_pipeline": "edgekiln.runner",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgekiln' has no attribute {name!r}")
