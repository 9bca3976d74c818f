"""A student per group of targets (`[student] select = "fastest"` without a profile): each
target group's fastest candidate, and the stages after distillation run once per distinct
winner, each branch cached on its own; the manifest, report, card, JUnit and diff say which
student each target got and why."""

import json

import pytest
from tiny_pipeline import invoke, write_config

# Two ONNX targets on two profiles: the shipped x86 server, and the host profile of a target
# that names none (one thread).
TWO_PROFILES = """
[[targets]]
name = "server"
profile = "x86-server-avx2"

[[targets]]
name = "edge"
format = "onnx"
artifact = "edge.onnx"
"""

CANDIDATES = ["mobilenetv3_small_050", "lcnet_035"]


def _latencies(fast_on: dict[str, str]):
    """A stand-in for each profile's timing (model_latency.for_profile): the candidate named
    in `fast_on[profile]` runs at 1 ms there, any other at 2 ms. The real timing is tested in
    test_model_latency; here the fork is under test, so the winners are fixed."""
    def for_profile(profile, data, workdir, subject, allow_estimate):
        def make(bundle):
            return lambda model: 1.0 if fast_on[profile.name] == bundle.arch else 2.0
        return make, f"stand-in timing of {profile.name}"
    return for_profile


@pytest.fixture(scope="module")
def forked(run, tmp_path_factory):
    """The shared tiny pipeline with two candidate students and a student per target, where
    the two targets' profiles prefer different candidates. (out folder, cache, manifest)."""
    from edgekiln.training import model_latency

    root, _, _ = run
    work = tmp_path_factory.mktemp("forked")
    config = write_config(work, targets=TWO_PROFILES)
    text = config.read_text().replace('arch = "mobilenetv3_small_050"',
                                      f'arch = {json.dumps(CANDIDATES)}\nselect = "fastest"')
    # Two epochs: lcnet_035 may still be near chance, so the budget takes every candidate in
    # (the ranking within it is under test, not the accuracy).
    config.write_text(text.replace("epochs = 6", "epochs = 2").replace("max_drop_total = 60.0", "max_drop_total = 95.0"))
    patch = pytest.MonkeyPatch()
    patch.setattr(model_latency, "for_profile", _latencies({"x86-server-avx2": "lcnet_035",
                                                            "host-onnx": "mobilenetv3_small_050"}))
    try:
        result = invoke(config, work / "out", root / "cache", "--junit", work / "junit.xml")
        again = invoke(config, work / "again", root / "cache")
    finally:
        patch.undo()
    assert result.exit_code == 0, result.output
    assert again.exit_code == 0, again.output
    return work, json.loads((work / "out" / "manifest.json").read_text()), result, again


def test_two_targets_with_different_fastest_students_get_a_branch_each(forked):
    work, manifest, result, _ = forked
    assert manifest["passed"] and manifest["error"] is None
    branches = {b["student"]: b for b in manifest["branches"]}
    assert set(branches) == set(CANDIDATES)
    assert branches["lcnet_035"]["targets"] == ["server"] and branches["mobilenetv3_small_050"]["targets"] == ["edge"]
    assert "fastest on x86-server-avx2 (1.000 ms" in branches["lcnet_035"]["why"][0]["why"]
    # every stage after distillation ran once per branch, named by its student
    ran = [(s["name"], s["branch"]) for s in manifest["stages"]]
    for student in CANDIDATES:
        assert [n for n, b in ran if b == student] == ["distill", "prune", "quantize", "export"]
        assert branches[student]["stages"] == ["distill", "prune", "quantize", "export"]
        assert set(branches[student]["sections"]) >= {"prune", "quantize"}
    assert ran[0] == ("teacher", None)
    distilled = {s["branch"]: s for s in manifest["stages"] if s["name"] == "distill"}
    assert distilled["lcnet_035"]["params"] < distilled["mobilenetv3_small_050"]["params"]
    # each artifact was built from its target's student, and says why
    artifacts = {a["target"]: a for a in manifest["artifacts"]}
    assert artifacts["server"]["student"]["name"] == "lcnet_035"
    assert artifacts["edge"]["student"]["name"] == "mobilenetv3_small_050"
    assert artifacts["server"]["cost_features"]["params"] < artifacts["edge"]["cost_features"]["params"]
    assert (work / "out" / "model.onnx").is_file() and (work / "out" / "edge.onnx").is_file()
    predictions = json.loads((work / "out" / "predictions.json").read_text())
    assert set(predictions["top1"]) == {"server", "edge"}
    # the candidates' records: the latency on each group's profile, and whom each was chosen for
    candidates = {c["name"]: c for c in manifest["student"]["candidates"]}
    assert candidates["lcnet_035"]["latency_by_group"] == {"x86-server-avx2": 1.0, "host-onnx": 2.0}
    assert candidates["lcnet_035"]["chosen_for"] == ["server"]
    assert manifest["student"]["per_target"] is True
    # stage gates name their branch; the console says which student each target got
    subjects = {g["subject"] for g in manifest["gates"] if g["subject_type"] == "stage"}
    assert {"prune (lcnet_035)", "prune (mobilenetv3_small_050)"} <= subjects
    said = " ".join(result.output.split())
    assert "student lcnet_035 for server" in said and "distill: a student per group of targets" in said
    junit = (work / "junit.xml").read_text()
    assert "prune (lcnet_035)" in junit and "prune (mobilenetv3_small_050)" in junit


def test_each_branch_is_cached_on_its_own(forked):
    work, first, _, again = forked
    second = json.loads((work / "again" / "manifest.json").read_text())
    assert all(s["cached"] for s in second["stages"]), [(s["name"], s["branch"], s["cached"]) for s in second["stages"]]
    keys = {(s["name"], s["branch"]): s["key"] for s in first["stages"]}
    assert keys[("prune", "lcnet_035")] != keys[("prune", "mobilenetv3_small_050")]
    assert keys == {(s["name"], s["branch"]): s["key"] for s in second["stages"]}
    assert [a["sha256"] for a in first["artifacts"]] == [a["sha256"] for a in second["artifacts"]]


def test_the_report_card_and_diff_show_each_targets_student(forked):
    from edgekiln.engine.manifest_schema import run_record
    from edgekiln.release.model_card import model_card
    from edgekiln.release.regression import diff_runs

    work, manifest, _, _ = forked
    html = (work / "out" / "report.html").read_text()
    assert 'id="branch-table"' in html and "prune (lcnet_035)" in html and "student: lcnet_035" in html
    assert "- lcnet_035 for server: fastest on x86-server-avx2" in model_card(run_record(manifest))
    # a release whose server artifact came from the other student: the diff names the change
    base = work / "base"
    base.mkdir()
    edited = json.loads(json.dumps(manifest))
    next(a for a in edited["artifacts"] if a["target"] == "server")["student"]["name"] = "mobilenetv3_small_050"
    (base / "manifest.json").write_text(json.dumps(edited))
    diff = diff_runs(base, work / "out")
    server = next(t for t in diff.targets if t.target == "server")
    assert any(c.metric == "student" and (c.base, c.new) == ("mobilenetv3_small_050", "lcnet_035")
               for c in server.changes)
    edge = next(t for t in diff.targets if t.target == "edge")
    assert not any(c.metric == "student" for c in edge.changes)
