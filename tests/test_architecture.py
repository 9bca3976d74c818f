"""The rooms keep their promises (ARCHITECTURE.md): imports point down the room order only and
form no cycle at import time, nothing outside a stage's package names a stage, and the CLI
stays a shell over the API."""

import ast
from pathlib import Path

import edgekiln
from edgekiln import stages

ROOT = Path(edgekiln.__file__).resolve().parents[1]
FOLDERS = {"pipeline": "edgekiln", "stages": "edgekiln.stages", "targets": "edgekiln.targets",
           "calibration": "edgekiln.calibration"}
# Bottom to top: a module may import its own room and those below it, never one above.
ROOMS = ["edgekiln.system", "edgekiln.calibration", "edgekiln.targets", "edgekiln", "edgekiln.data", "edgekiln.training",
         "edgekiln.stages", "edgekiln.engine", "edgekiln.release", "edgekiln.interfaces"]


def _modules():
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join([package, *parts]), path


MODULES = {module for module, _ in _modules()}


def _room(module: str) -> str:
    if module == "edgekiln.__main__":  # `python -m edgekiln`: the command line's entry point
        return "edgekiln.interfaces"
    rooms = [r for r in ROOMS if r != "edgekiln" and (module == r or module.startswith(r + "."))]
    return max(rooms, key=len) if rooms else "edgekiln"


def _imports(path: Path, top_level_only: bool):
    """(edgekiln module imported, line) of every import in the file (or its top level only)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "edgekiln":
            for alias in node.names:  # `from package import module` imports the module
                submodule = f"{node.module}.{alias.name}"
                yield (submodule if submodule in MODULES or node.module == "edgekiln" else node.module), node.lineno
        elif isinstance(node, ast.Import):
            yield from ((a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "edgekiln")


def test_imports_point_down_the_rooms_only():
    seen, upward = 0, []
    for module, path in _modules():
        for imported, line in _imports(path, top_level_only=False):
            seen += 1
            if ROOMS.index(_room(imported)) > ROOMS.index(_room(module)):
                upward.append(f"{path.relative_to(ROOT)}:{line} ({_room(module)}) imports {imported}")
    assert seen > 300 and upward == [], "\n".join(upward)


def test_no_import_cycle_at_import_time():
    modules = dict(_modules())
    graph = {m: {i for i, _ in _imports(p, top_level_only=True) if i in modules and i != m} for m, p in modules.items()}
    state: dict[str, int] = {}

    def visit(module, trail):
        state[module] = 1
        for nxt in graph[module]:
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*trail, module, nxt]))
            if nxt not in state:
                visit(nxt, [*trail, module])
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [])


def test_nothing_outside_a_stages_package_names_a_stage():
    """A stage's name appears only in its own package (and in tests, docs, configs). The
    [distill] section shares the distill stage's name, and the gates call the reference model
    by its role in [budget] (max_drop_total: "points below the teacher"): both are allowed, as
    is the config `edgekiln compress` writes, which lists stages as any config does."""
    names = {s.name for s in stages.registered()}
    allowed = {("edgekiln.engine.config", "distill"), ("edgekiln.gates", "teacher"),
               *(("edgekiln.interfaces.configs", n) for n in ("prune", "quantize", "export"))}
    found = []
    for module, path in _modules():
        parts = module.split(".")
        own = parts[2] if len(parts) > 2 and parts[1] == "stages" and parts[2] in names else None
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Constant) and node.value in names and node.value != own
                    and (module, node.value) not in allowed and own is None):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert found == [], "\n".join(found)


def test_the_cli_is_a_shell_over_the_api():
    cli = ROOT / "pipeline" / "interfaces" / "cli.py"
    assert len(cli.read_text().splitlines()) < 300
    # It neither trains nor converts: it imports no engine, stage or training module but the
    # torchrun launcher and follower loop (training/distributed.py).
    imported = {m for m, _ in _imports(cli, top_level_only=False)} - {"edgekiln.training.distributed"}
    assert not {m for m in imported if _room(m) in ("edgekiln.training", "edgekiln.stages", "edgekiln.engine")}
