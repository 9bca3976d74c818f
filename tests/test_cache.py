import pytest

from edgekiln.engine.cache import StageCache, stage_key


def test_key_depends_on_every_part():
    base = stage_key("prune", "0.1.0", {"prune": {"macs_ratio": 0.5}}, ["data", "k1"])
    assert base == stage_key("prune", "0.1.0", {"prune": {"macs_ratio": 0.5}}, ["data", "k1"])
    assert base != stage_key("distill", "0.1.0", {"prune": {"macs_ratio": 0.5}}, ["data", "k1"])
    assert base != stage_key("prune", "0.2.0", {"prune": {"macs_ratio": 0.5}}, ["data", "k1"])
    assert base != stage_key("prune", "0.1.0", {"prune": {"macs_ratio": 0.6}}, ["data", "k1"])
    assert base != stage_key("prune", "0.1.0", {"prune": {"macs_ratio": 0.5}}, ["data", "k2"])


def test_entry_appears_only_when_writing_finishes(tmp_path):
    cache = StageCache(tmp_path)
    with cache.writing("teacher", "abc") as work:
        (work / "result.json").write_text("{}")
        assert cache.lookup("teacher", "abc") is None
    assert (cache.lookup("teacher", "abc") / "result.json").read_text() == "{}"


def test_failed_stage_leaves_no_entry_and_no_temporary(tmp_path):
    cache = StageCache(tmp_path)
    with pytest.raises(RuntimeError):
        with cache.writing("teacher", "abc") as work:
            (work / "half.bin").write_bytes(b"x")
            raise RuntimeError("killed mid-stage")
    assert cache.lookup("teacher", "abc") is None
    assert list((tmp_path / ".tmp").iterdir()) == []


def test_leftover_from_a_killed_run_is_not_an_entry(tmp_path):
    (tmp_path / ".tmp" / "teacher-abc-1234").mkdir(parents=True)
    assert StageCache(tmp_path).lookup("teacher", "abc") is None


def test_a_stages_code_is_its_module_and_what_it_imports_not_every_file():
    from edgekiln.engine import stage_code

    teacher, libraries = stage_code.closure("edgekiln.stages.teacher.work", *stage_code.ENGINE)
    assert {"edgekiln.stages.teacher.work", "edgekiln.stages.teacher", "edgekiln.training.trainer",
            "edgekiln.data.dataset", "edgekiln.training.evaluation"} <= set(teacher)
    assert not {"edgekiln.release.plots", "edgekiln.interfaces.cli", "edgekiln.release.html_report",
                "edgekiln.interfaces.api", "edgekiln.engine.runner", "edgekiln.stages.teacher.report",
                "edgekiln.stages.distill", "edgekiln.stages.distill.work", "edgekiln.stages.export.work"} & set(teacher)
    assert {"torch", "timm"} <= set(libraries)
    export, _ = stage_code.closure("edgekiln.stages.export.work", *stage_code.ENGINE)
    assert {"edgekiln.targets.formats.onnx", "edgekiln.targets.runners.host"} <= set(export)  # found by name


def test_editing_the_trainer_changes_the_teacher_key_editing_the_plots_or_upgrading_edgekiln_does_not(
        tmp_path, monkeypatch):
    from edgekiln.engine import stage_code

    real_source = stage_code._source

    def edited(module):
        def source(name):
            path = real_source(name)
            if name != module or path is None:
                return path
            copy = tmp_path / f"{name}.py"
            copy.write_text(path.read_text() + "\n# an edit\n")
            return copy
        return source

    def version_with():
        stage_code.code_version.cache_clear()
        stage_code.closure.cache_clear()
        stage_code._version.cache_clear()
        return stage_code.code_version("edgekiln.stages.teacher.work")

    base = version_with()
    monkeypatch.setattr(stage_code, "_source", edited("edgekiln.release.plots"))
    assert version_with() == base
    monkeypatch.setattr(stage_code, "_source", edited("edgekiln.stages.distill.work"))
    assert version_with() == base
    monkeypatch.setattr(stage_code, "_source", edited("edgekiln.stages.teacher.report"))  # its tables, not its work
    assert version_with() == base
    monkeypatch.setattr(stage_code, "_source", edited("edgekiln"))  # the package's __init__: the version
    assert version_with() == base
    monkeypatch.setattr(stage_code, "_source", edited("edgekiln.training.trainer"))
    assert version_with() != base
    monkeypatch.setattr(stage_code, "_source", real_source)
    monkeypatch.setattr("edgekiln.__version__", "99.0")
    assert version_with() == base
    real_version = stage_code.version
    monkeypatch.setattr(stage_code, "version", lambda dist: "9.9" if dist == "torch" else real_version(dist))
    assert version_with() != base
    monkeypatch.undo()
    stage_code.code_version.cache_clear()
    stage_code.closure.cache_clear()
    stage_code._version.cache_clear()


def test_every_module_that_imports_by_name_is_known_to_the_stage_code():
    """A registry that imports modules by name hides them from the import statements the
    stage code is read from: each must be listed in stage_code.DISCOVERS."""
    import re
    from pathlib import Path

    import edgekiln
    from edgekiln.engine import stage_code

    found = set()
    for package in ("edgekiln", "edgekiln.stages", "edgekiln.targets", "edgekiln.calibration"):
        folder = Path(__import__(package, fromlist=["_"]).__file__).parent
        for path in folder.rglob("*.py"):
            if re.search(r"importlib\.import_module\(|pkgutil\.", path.read_text()):
                found.add(path.resolve())
    known = {stage_code._source(name).resolve() for name in (*stage_code.DISCOVERS, *stage_code.IMPORTS_NO_STAGE_CODE)}
    lazy_exports = Path(edgekiln.__file__).resolve()  # the package's lazy API names, not stage code
    itself = Path(stage_code.__file__).resolve()
    assert found - known - {lazy_exports, itself} == set(), found - known


def _key(name: str) -> str:
    """A key of the form stage_key gives (24 hex digits): `cache gc` takes no other folder for an entry."""
    import hashlib

    return hashlib.sha256(name.encode()).hexdigest()[:24]


def _entry(tmp_path, files=None):
    cache = StageCache(tmp_path, warn=lambda m: warnings.append(m))
    with cache.writing("export", _key("k1")) as work:
        for name, data in (files or {"result.json": b'{"accuracy": 91.0}', "model.onnx": b"\x01" * 1000}).items():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            (work / name).write_bytes(data)
    return cache, cache.entry("export", _key("k1"))


warnings: list[str] = []


@pytest.mark.parametrize("damage, why", [
    (lambda e: (e / "model.onnx").write_bytes(b"\x01" * 999 + b"\x02"), "model.onnx differs"),  # a flipped byte
    (lambda e: (e / "result.json").write_text('{"accuracy": 99.0}'), "result.json differs"),  # an edited figure
    (lambda e: (e / "model.onnx").write_bytes(b"\x01" * 10), "model.onnx has 10 bytes"),  # truncated
    (lambda e: (e / "model.onnx").unlink(), "model.onnx is missing"),
    (lambda e: (e / "extra.bin").write_bytes(b"x"), "extra.bin was added"),
    (lambda e: (e / ".entry.json").unlink(), "no readable integrity record"),
])
def test_a_damaged_entry_is_discarded_with_a_warning_naming_it(tmp_path, damage, why):
    warnings.clear()
    cache, entry = _entry(tmp_path)
    assert cache.lookup("export", _key("k1")) == entry  # intact: used
    damage(entry)
    assert cache.lookup("export", _key("k1")) is None  # damaged: recomputed
    assert not entry.exists()
    assert len(warnings) == 1 and f"export/{_key('k1')} discarded" in warnings[0] and why in warnings[0]
    assert cache.discarded[0]["entry"] == f"export/{_key('k1')}"


def test_recorded_hash_of_a_directory_artifact_matches_the_published_form(tmp_path):
    from edgekiln.system.files import sha256

    cache, entry = _entry(tmp_path, {"result.json": b"{}", "model.mlpackage/Data/weight.bin": b"w" * 50,
                                     "model.mlpackage/Manifest.json": b"{}"})
    assert cache.recorded_sha256(entry, "model.mlpackage") == sha256(entry / "model.mlpackage")
    assert cache.recorded_sha256(entry, "result.json") == sha256(entry / "result.json")


def test_a_second_run_waits_for_the_stage_lock_and_a_killed_holder_releases_it(tmp_path):
    import subprocess
    import sys
    import threading
    import time

    cache = StageCache(tmp_path)
    waited = []
    held = threading.Event()
    release = threading.Event()

    def holder():
        with cache.locked("distill", "k"):
            held.set()
            release.wait(5)
    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(5)
    threading.Timer(0.3, release.set).start()
    started = time.perf_counter()
    with cache.locked("distill", "k", on_wait=lambda: waited.append(True)):
        assert waited == [True] and time.perf_counter() - started >= 0.25
    thread.join()
    # a holder killed with -9 leaves the lock free
    code = ("import fcntl, os, sys, time; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); "
            "print('held', flush=True); time.sleep(60)")
    lock_file = tmp_path / ".locks" / "distill-k.lock"
    child = subprocess.Popen([sys.executable, "-c", code, str(lock_file)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    child.kill()
    child.wait()
    waited.clear()
    with cache.locked("distill", "k", on_wait=lambda: waited.append(True)):
        assert waited == []


def test_gc_removes_unused_then_least_recently_used_entries(tmp_path):
    import os
    import time

    cache = StageCache(tmp_path)
    for key, age in (("old", 10 * 86400), ("mid", 3600), ("new", 0)):
        with cache.writing("teacher", _key(key)) as work:
            (work / "w.bin").write_bytes(b"x" * 1000)
        stamp = time.time() - age
        os.utime(cache.entry("teacher", _key(key)) / ".entry.json", (stamp, stamp))
    removed = cache.gc(older_than_seconds=86400)
    assert [e.key for e in removed] == [_key("old")]
    removed = cache.gc(max_size_bytes=1500)
    assert [e.key for e in removed] == [_key("mid")] and [e.key for e in cache.entries()] == [_key("new")]


def test_a_stage_key_follows_the_content_of_the_profiles_it_reads_not_their_names(tmp_path):
    import shutil as sh
    import textwrap

    from edgekiln.engine.config import load_config, plan_of
    from edgekiln.engine.runner import stage_key_of
    from edgekiln.targets.profiles import SHIPPED_DIR

    for name in ("pixel-3-cpu.toml", "pixel-3-cpu.references.csv"):
        sh.copy(SHIPPED_DIR / name, tmp_path / name)
    config = tmp_path / "p.toml"
    config.write_text(textwrap.dedent("""
        [teacher]
        candidates = ["resnet10t"]
        [student]
        arch = ["mobilenetv3_small_050", "mobilenetv3_small_075"]
        select = "fastest"
        profile = "pixel-3-cpu.toml"
        [prune]
        latency_ms = 0.5
        profile = "pixel-3-cpu.toml"
        [[targets]]
        name = "server"
        format = "onnx"
    """))
    def keys():
        cfg, out = load_config(config), {}
        plan = plan_of(cfg)
        for node in plan.stages:
            out[node.name] = stage_key_of(node, cfg, "code", "data", out, plan)
        return out
    before = keys()
    assert keys() == before
    table = tmp_path / "pixel-3-cpu.references.csv"
    table.write_text(table.read_text() + table.read_text().splitlines()[-1] + "\n")  # one more reference row
    after = keys()
    assert after["teacher"] == before["teacher"]
    assert after["distill"] != before["distill"]  # select = fastest ranks on this profile
    assert after["prune"] != before["prune"]  # prunes to a latency estimated on it


def test_cache_commands_list_verify_and_prune(tmp_path):
    from typer.testing import CliRunner

    from edgekiln.interfaces.cli import app

    cache, entry = _entry(tmp_path)
    cli = CliRunner()
    listed = cli.invoke(app, ["cache", "ls", "--cache-dir", str(tmp_path)])
    assert listed.exit_code == 0 and "export" in listed.output and "1 entries" in listed.output
    assert cli.invoke(app, ["cache", "verify", "--cache-dir", str(tmp_path)]).exit_code == 0
    (entry / "model.onnx").write_bytes(b"\x00" * 1000)
    damaged = cli.invoke(app, ["cache", "verify", "--cache-dir", str(tmp_path)])
    assert damaged.exit_code == 1 and "model.onnx differs" in damaged.output and entry.exists()
    assert cli.invoke(app, ["cache", "verify", "--cache-dir", str(tmp_path), "--discard"]).exit_code == 1
    assert not entry.exists()
    assert cli.invoke(app, ["cache", "gc", "--cache-dir", str(tmp_path), "--older-than", "3x"]).exit_code == 2
    assert cli.invoke(app, ["cache", "gc", "--cache-dir", str(tmp_path), "--max-size", "1GB"]).exit_code == 0


def test_a_stage_key_holds_the_formats_its_config_uses_and_no_other():
    """Editing targets/formats/coreml.py (or upgrading coremltools) leaves the teacher,
    distillation and pruning cached: only the stages that convert to Core ML hold its code."""
    import textwrap

    from edgekiln import stages as registry
    from edgekiln.engine import stage_code
    from edgekiln.engine.config import config_from_text
    from edgekiln.engine.runner import stage_code_of

    cfg = config_from_text(textwrap.dedent("""
        [data]
        source = "digits"
        [teacher]
        candidates = ["resnet10t"]
        [student]
        arch = "resnet10t_w16"
        [[targets]]
        name = "server"
        profile = "x86-server-avx2"
        [[targets]]
        name = "iphone"
        profile = "iphone-15-pro-ane"
        """))

    def formats_in(name: str) -> tuple[set[str], set[str]]:
        node = registry.stage_named(name)
        declared = node.formats(node.sections_of(cfg))
        modules, libraries = stage_code.closure(node.module, *stage_code.ENGINE, formats=tuple(sorted(declared)))
        return {m.split(".")[3] for m in modules if m.startswith("edgekiln.targets.formats.")}, set(libraries)

    for name in ("teacher", "distill", "prune"):
        formats, libraries = formats_in(name)
        assert formats == set() and "coremltools" not in libraries, (name, formats)
    assert formats_in("quantize")[0] == {"tflite"}  # its INT8 simulation
    formats, libraries = formats_in("export")
    # its targets' formats, and the INT8 simulation it searches float layers with and takes QAT's graph from
    assert formats == {"onnx", "coreml", "tflite"} and "coremltools" in libraries
    # a stage that declares nothing holds every format, as before
    all_formats = {m.split(".")[3] for m in stage_code.closure("edgekiln.stages.export.work", *stage_code.ENGINE)[0]
                   if m.startswith("edgekiln.targets.formats.")}
    assert {"onnx", "coreml", "tflite", "executorch"} <= all_formats
    assert stage_code_of(registry.stage_named("teacher"), cfg) != stage_code_of(registry.stage_named("export"), cfg)
