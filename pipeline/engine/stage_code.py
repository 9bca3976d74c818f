"""The code a stage's result depends on, for its cache key: the source of its module and of
every edgekiln module it imports (directly or not, at the top or inside a function), and the
versions of the libraries those modules import. Editing the reports, the CLI or another
stage leaves a stage's key as it was; editing the trainer, the data reader or a converter
wrapper it calls changes it, and so does upgrading torch or a converter it uses. The
edgekiln version is not part of it: an upgrade that leaves a stage's code alone keeps its
cache.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import json
import pkgutil
import sys
from importlib.metadata import PackageNotFoundError, packages_distributions, version
from pathlib import Path

# Modules that import others by name at run time (a registry), and the packages they load
# that way: their modules are part of the code of any stage that imports the registry.
DISCOVERS = {"edgekiln.targets.format": ("edgekiln.targets.formats",),
             # a follower rank rebuilds QAT's graph with the INT8 simulation a format names
             "edgekiln.training.qat": ("edgekiln.targets.formats",),
             # an INT8 artifact of a QAT model is the graph QAT trained, which that simulation restores
             "edgekiln.targets.formats.onnx": ("edgekiln.targets.formats",),
             "edgekiln.targets.runners": ("edgekiln.targets.runners",),
             # its names are imported on first use (validate reads its image suffixes without torch)
             "edgekiln.calibration": ("edgekiln.calibration",)}

# Modules that import by name what no stage's work runs: the stage registry imports the
# stages' declarations (to build the DAG and the config schema), not their work.
IMPORTS_NO_STAGE_CODE = ("edgekiln.stages",)

# What the runner does to every stage's result before it is cached (grading it on the test
# split, storing it): part of every stage's code.
ENGINE = ("edgekiln.training.evaluation", "edgekiln.stages.result")


@functools.lru_cache(maxsize=None)
def _spec(name: str):
    """The module spec of `name`, found without running any module but its parent packages'
    __init__ (None when `name` is not a module: a name defined inside one)."""
    parent = name.rpartition(".")[0]
    if parent:
        spec = _spec(parent)
        if spec is None or spec.submodule_search_locations is None:
            return None  # the parent is a module, not a package: `name` is something inside it
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError, AttributeError):
        return None


def _source(name: str) -> Path | None:
    spec = _spec(name)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


@functools.lru_cache(maxsize=None)  # parsed once per process: every stage's closure walks the engine's modules
def _imports(name: str, path: Path) -> tuple[frozenset[str], frozenset[str]]:
    """(edgekiln modules, other top-level packages) that the file imports anywhere."""
    ours, theirs = set(), set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            # `from package import module` runs the module; a name defined in the package's
            # __init__ (a registry's `get_format`) runs the __init__.
            ours_too = base == "edgekiln" or base.startswith("edgekiln.")
            found = [f"{base}.{alias.name}" if ours_too and _source(f"{base}.{alias.name}") else base
                     for alias in node.names]
        else:
            continue
        for module in found:
            if module == "edgekiln" or module.startswith("edgekiln."):
                ours.add(module)
            elif module:
                theirs.add(module.split(".")[0])
    return frozenset(ours), frozenset(theirs)


# The formats' package: a registry discovers every format in it, but a stage that declares
# the formats it uses (Stage.formats) holds only those in its key.
FORMATS = "edgekiln.targets.formats"


def _discovered(package: str, formats: tuple[str, ...] | None) -> list[str]:
    """The modules a registry loads from `package`: all, or of the formats' package only the
    named formats' (and the package itself)."""
    found = _source(package)
    if found is None:
        return []
    members = [m.name for m in pkgutil.walk_packages([str(found.parent)], prefix=f"{package}.")]
    if package == FORMATS and formats is not None:
        members = [m for m in members if m.removeprefix(f"{FORMATS}.").split(".")[0] in formats]
    return [package, *members]


@functools.lru_cache(maxsize=None)
def closure(*roots: str, formats: tuple[str, ...] | None = None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the edgekiln modules `roots` run, the third-party packages they import), sorted.
    `formats`: the artifact formats they may use (None: every format the registry has)."""
    seen: dict[str, Path] = {}
    libraries: set[str] = set()
    stack = list(roots)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        path = _source(name)
        if path is None:  # not a module: a name imported from one (`from edgekiln.x import y`)
            continue
        seen[name] = path
        ours, theirs = map(set, _imports(name, path))
        # Importing a module runs its packages' __init__ first (a stage's declaration, its
        # config schema); edgekiln's own holds only the version, which is not part of a key.
        parents = name.split(".")
        ours |= {".".join(parents[:i]) for i in range(2, len(parents))}
        libraries |= theirs
        stack.extend(ours)
        for package in DISCOVERS.get(name, ()):
            stack.extend(_discovered(package, formats))
    stdlib = set(sys.stdlib_module_names)
    return tuple(sorted(seen)), tuple(sorted(lib for lib in libraries if lib not in stdlib))


@functools.lru_cache(maxsize=1)
def _distributions() -> dict:
    return packages_distributions()


def library_versions(packages) -> dict[str, str | None]:
    """The installed version of each package's distribution (None when not installed)."""
    distributions = _distributions()
    return dict(sorted((dist, _version(dist)) for package in packages
                       for dist in distributions.get(package, [package])))


@functools.lru_cache(maxsize=None)
def _version(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=None)
def code_version(module: str, formats: tuple[str, ...] | None = None) -> str:
    """The hash of the code a stage defined in `module` runs: every module of its closure
    (name and source) and the versions of the libraries they import. `formats`: the artifact
    formats it uses under its config (None: all), so that editing the Core ML format or
    upgrading coremltools re-runs only the stages that use Core ML."""
    modules, libraries = closure(module, *ENGINE, formats=formats)
    h = hashlib.sha256(json.dumps(library_versions(libraries), sort_keys=True).encode())
    for name in modules:
        h.update(name.encode() + b"\0" + _source(name).read_bytes())
    return h.hexdigest()[:16]
