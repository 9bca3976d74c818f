import pytest

from edgekiln.cache import StageCache, stage_key


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


def test_code_version_follows_sources_and_tools(tmp_path, monkeypatch):
    import sys

    from edgekiln.cache import code_version

    (tmp_path / "fakepkg").mkdir()
    (tmp_path / "fakepkg" / "__init__.py").write_text("x = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    base = code_version("0.1.0", {"torch": "2.14.1"}, ["fakepkg"])
    assert base == code_version("0.1.0", {"torch": "2.14.1"}, ["fakepkg"])
    assert base != code_version("0.1.0", {"torch": "2.15.0"}, ["fakepkg"])
    (tmp_path / "fakepkg" / "__init__.py").write_text("x = 2\n")
    assert base != code_version("0.1.0", {"torch": "2.14.1"}, ["fakepkg"])
    sys.modules.pop("fakepkg", None)
