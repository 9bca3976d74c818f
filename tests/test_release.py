"""Release builds: `edgekiln diff` against the last release, JUnit files, report.html in a real
headless browser, MODEL_CARD.md and the Python API."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import tomllib

import junitparser
import pytest
from tiny_pipeline import TINY
from typer.testing import CliRunner

import edgekiln
from edgekiln.engine.config import ConfigError
from edgekiln.errors import InputError
from edgekiln.interfaces.api import config_of
from edgekiln.interfaces.cli import app
from edgekiln.engine.manifest_schema import run_record
from edgekiln.release.junit import run_cases, write_junit
from edgekiln.release.model_card import model_card
from edgekiln.release.regression import diff_runs


def _artifact(target="phone", **changes):
    record = {
        "target": target, "format": "tflite", "encoding": "int8", "io": "float", "runtime": "ai-edge-litert",
        "threads": 1, "profile": "pixel-3-cpu", "device": "Google Pixel 3 CPU", "size_bytes": 1_000_000,
        "accuracy": 98.0, "accuracy_source": "runtime", "test_accuracy": 97.5, "test_accuracy_source": "runtime",
        "test_accuracy_ci": [96.0, 98.6], "test_drop": 0.5, "drop_ci": [-0.2, 1.1],
        "latency_ms": {"p50": 10.0, "p90": 12.0}, "latency_source": "device", "peak_memory_mb": 30.0,
        "cost_features": {"params": 800_000, "macs": 5_000_000}, "path": "model.tflite", "sha256": "ab" * 32,
        "passed": True, "budget": {}, "budgets_not_checked": [],
        "gates": [{"subject": f"target {target}", "budget_key": "budget.max_drop_total", "value": 97.5,
                   "reference_name": "teacher", "reference": 98.0, "budget": 1.5, "split": "test",
                   "drop_interval": [-0.2, 1.1], "rule": "point", "drop": 0.5, "passed": True, "decided_on": 0.5}],
    }
    record.update(changes)
    return record


def _manifest(*artifacts, release=None, splits_sha="s" * 64, **changes):
    manifest = {
        "edgekiln_version": "0.1.0", "created": "2026-11-30T12:00:00+0000", "passed": True, "error": None,
        "config_sha256": "c" * 64, "tool_versions": {"torch": "2.14.1", "onnxruntime": "1.32.0"},
        "compute": {"device": "cpu", "name": "x86_64"},
        "config": {"data": {"source": "digits"}, "student": {"arch": "mobilenetv3_small_050"},
                   "budget": {"max_drop_total": 1.5, "gate": "point"},
                   "targets": [{"name": a["target"]} for a in artifacts],
                   **({"release": release} if release is not None else {})},
        "teacher": {"name": "resnet10t", "accuracy": 99.0, "test_accuracy": 98.0, "candidates": []},
        "student": None, "splits": {"file": "splits.json", "sha256": splits_sha, "train": 1000, "val": 360,
                                    "test": 360, "data_fingerprint": "f" * 16},
        "stages": [{"name": s} for s in ("teacher", "distill", "prune", "quantize", "export")],
        "gates": [g for a in artifacts for g in a["gates"]], "artifacts": list(artifacts),
        "preprocessing": {"image_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3}, "labels": ["0", "1", "2"],
    }
    manifest.update(changes)
    return manifest


def _write(tmp_path, name, manifest):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _diff(tmp_path, base, new, **thresholds):
    return diff_runs(_write(tmp_path, "base", base), _write(tmp_path, "new", new), **thresholds)


def _change(result, target, metric):
    return next(c for t in result.targets if t.target == target for c in t.changes if c.metric == metric)


def test_identical_runs_have_no_regression(tmp_path):
    result = _diff(tmp_path, _manifest(_artifact()), _manifest(_artifact()))
    assert result.passed and not result.regressions
    assert {c.metric for t in result.targets for c in t.changes if c.gated} == {
        "test accuracy", "p50 latency", "p90 latency", "size"}


def test_each_threshold_gates_its_figure_and_names_where_it_was_set(tmp_path):
    new = _artifact(test_accuracy=96.0, latency_ms={"p50": 11.5, "p90": 12.5}, size_bytes=1_200_000)
    result = _diff(tmp_path, _manifest(_artifact()), _manifest(new, release={"max_size_increase": 25.0}))
    regressed = {c.metric: c for _, c in result.regressions}
    assert set(regressed) == {"test accuracy", "p50 latency"}  # p90 +4.2% and size +20% are within
    assert regressed["test accuracy"].threshold_key == "release.max_accuracy_drop (default)"
    assert "REGRESSION phone: test accuracy 97.5 -> 96 points (-1.5 points)" in regressed["test accuracy"].message("phone")
    assert _change(result, "phone", "size").threshold_key == "release.max_size_increase"
    # a flag overrides the config's [release]
    result = diff_runs(tmp_path / "base", tmp_path / "new", max_accuracy_drop=2.0, max_latency_increase=20.0,
                       max_size_increase=10.0)
    assert [(c.metric, c.threshold_key) for _, c in result.regressions] == [("size", "--max-size-increase")]


def test_figures_that_are_not_comparable_are_shown_but_never_gate(tmp_path):
    base = _manifest(_artifact(), _artifact("server", latency_source="host", device="this host (Xeon)"),
                     _artifact("iphone", accuracy_source="proxy", test_accuracy_source="proxy"))
    new = _manifest(_artifact(latency_source="estimate", latency_ms={"p50": 50.0, "p90": None}),
                    _artifact("server", latency_source="host", device="this host (EPYC)", latency_ms={"p50": 30.0}),
                    _artifact("iphone", test_accuracy=80.0))  # now measured in its runtime, not the proxy
    result = _diff(tmp_path, base, new)
    assert result.passed, [c.message(t) for t, c in result.regressions]
    assert _change(result, "phone", "p50 latency").why_not_comparable == "device vs estimate"
    assert "different devices" in _change(result, "server", "p50 latency").why_not_comparable
    assert _change(result, "iphone", "test accuracy").why_not_comparable == "measured proxy vs runtime"
    # other images: accuracy is not compared at all, and the diff says why
    result = diff_runs(tmp_path / "base", _write(tmp_path, "other-split", _manifest(
        _artifact(test_accuracy=50.0), splits_sha="t" * 64)))
    assert _change(result, "phone", "test accuracy").comparable is False
    assert any("different images" in note for note in result.notes)
    changed = _manifest(_artifact(test_accuracy=50.0))
    changed["splits"]["data_fingerprint"] = "e" * 16  # same members, other image content
    result = diff_runs(tmp_path / "base", _write(tmp_path, "other-images", changed))
    assert _change(result, "phone", "test accuracy").comparable is False and result.passed
    assert any("the images changed" in note for note in result.notes)


def _with_predictions(folder, manifest, top1: dict, labels: list):
    """Write the run's predictions.json beside its manifest, recorded as `run` records it."""
    from edgekiln.system.files import sha256

    path = folder / "predictions.json"
    path.write_text(json.dumps({"split": "test", "labels": labels, "top1": top1}))
    manifest["predictions"] = {"file": path.name, "sha256": sha256(path), "split": "test", "targets": sorted(top1)}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_with_both_runs_predictions_the_accuracy_change_is_paired_image_by_image(tmp_path):
    labels = [i % 3 for i in range(360)]
    base_top1 = list(labels)
    new_top1 = [(y + 1) % 3 if i < 7 else y for i, y in enumerate(labels)]  # 7 images newly wrong, none fixed
    base = _write(tmp_path, "base", {})
    new = _write(tmp_path, "new", {})
    _with_predictions(base, _manifest(_artifact(test_accuracy=100.0)), {"phone": base_top1}, labels)
    _with_predictions(new, _manifest(_artifact(test_accuracy=100 * 353 / 360)), {"phone": new_top1}, labels)
    result = diff_runs(base, new)
    change = _change(result, "phone", "test accuracy")
    assert change.regressed and change.paired["only_reference_right"] == 7 and change.paired["only_model_right"] == 0
    assert change.paired["interval"][0] > 0 and change.paired["mcnemar_p"] < 0.05  # not noise
    assert "paired over 360 images" in change.message("phone")
    # predictions that are not the ones the run wrote are refused, naming the file
    (new / "predictions.json").write_text("{}")
    with pytest.raises(InputError, match="predictions.json: sha256 differs"):
        diff_runs(base, new)


def test_targets_added_or_removed_and_upstream_changes_are_reported(tmp_path):
    base = _manifest(_artifact(), _artifact("server"))
    new = _manifest(_artifact(), _artifact("watch"), teacher={"name": "resnet14t"},
                    tool_versions={"torch": "2.15.0", "onnxruntime": "1.32.0"})
    result = _diff(tmp_path, base, new)
    assert {t.target: t.status for t in result.targets} == {"phone": "compared", "watch": "added", "server": "removed"}
    assert {c.metric: (c.base, c.new) for c in result.lineage}["teacher"] == ("resnet10t", "resnet14t")
    assert {c.metric for c in result.lineage} >= {"teacher", "torch"}
    assert result.passed  # reported, not a regression in itself


def test_a_folder_that_is_not_a_run_is_bad_input(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "manifest.json").write_text(json.dumps(_manifest(_artifact())))
    result = CliRunner().invoke(app, ["diff", str(tmp_path / "empty"), str(tmp_path / "new")])
    assert result.exit_code == 2 and "no manifest.json there" in result.stderr
    (tmp_path / "empty" / "manifest.json").write_text("{not json")
    result = CliRunner().invoke(app, ["diff", str(tmp_path / "empty"), str(tmp_path / "new")])
    assert result.exit_code == 2 and "not valid JSON" in result.stderr
    # an output that cannot be written is bad input too, named, not an internal error
    (tmp_path / "a-file").write_text("")
    for option in ("--junit", "--json", "--html"):
        result = CliRunner().invoke(app, ["diff", str(tmp_path / "new"), str(tmp_path / "new"), option,
                                          str(tmp_path / "a-file" / "out")])
        assert result.exit_code == 2, result.output
        assert f"{option[2:]} file {tmp_path / 'a-file' / 'out'}: cannot write it" in " ".join(result.stderr.split())


def _junit(path):
    """The file parsed by junitparser, as a CI system would read it: [(classname, name, outcome, message)]."""
    xml = junitparser.JUnitXml.fromfile(str(path))
    cases = []
    for suite in xml:
        counted = {"failures": 0, "errors": 0, "skipped": 0}
        for case in suite:
            outcome = "passed"
            for result in case.result:
                outcome = {"Failure": "failure", "Error": "error", "Skipped": "skipped"}[type(result).__name__]
                counted[{"failure": "failures", "error": "errors", "skipped": "skipped"}[outcome]] += 1
            message = case.result[0].message if case.result else case.system_out
            cases.append((case.classname, case.name, outcome, message))
        assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (
            len(list(suite)), counted["failures"], counted["errors"], counted["skipped"])
    return cases


def test_junit_of_a_run_has_a_case_per_gate_failures_with_messages_and_skips_with_reasons(tmp_path):
    failed = _artifact(budgets_not_checked=["budget.p90_ms of profile pixel-3-cpu = 25 not checked: p90 latency "
                                            "was not measured (source: estimate)"])
    failed["gates"][0].update(value=95.0, drop=3.0, decided_on=3.0, passed=False)
    manifest = _manifest(failed, passed=False)
    cases = _junit(write_junit(tmp_path / "run.xml", "edgekiln run tiny", run_cases(run_record(manifest))))
    assert ("edgekiln.run.target.phone", "budget.max_drop_total", "failure") == cases[0][:3]
    assert "gate FAILED: target phone: test accuracy 95.00% is 3.00 points below teacher" in cases[0][3]
    skipped = [c for c in cases if c[2] == "skipped"]
    assert skipped == [("edgekiln.run.target.phone", "budget.p90_ms of profile pixel-3-cpu", "skipped",
                        failed["budgets_not_checked"][0])]
    # a run that stopped at a stage: the stages and targets it never judged are skipped, saying why
    stopped = _manifest(_artifact(), stages=[{"name": "teacher"}, {"name": "distill"}], artifacts=[], gates=[],
                        passed=False, error="InputError: data.path: no images")
    cases = _junit(write_junit(tmp_path / "stopped.xml", "edgekiln run tiny", run_cases(run_record(stopped))))
    outcomes = {(c[0], c[2]) for c in cases}
    assert ("edgekiln.run.stage.prune", "skipped") in outcomes and ("edgekiln.run.target.phone", "skipped") in outcomes
    assert ("edgekiln.run", "error") in outcomes
    assert all("no images" in c[3] for c in cases)


def test_model_card_says_what_the_model_is_for_and_what_was_not_measured():
    manifest = _manifest(
        _artifact(), _artifact("iphone", format="coreml", accuracy_source="proxy", runtime="coremltools",
                               accuracy_not_measured="Core ML predictions need macOS", latency_source="estimate"),
        config={**_manifest()["config"], "card": {"intended_use": "sorting handwritten digits on a phone",
                                                   "license": "Apache-2.0"}})
    card = model_card(run_record(manifest))
    assert "sorting handwritten digits on a phone" in card and "License: Apache-2.0" in card
    assert "Labels (3): `0`, `1`, `2`" in card
    assert "| phone | tflite | int8 | 1000 KB | 97.50% [96.0, 98.6] | +0.50 points | ai-edge-litert |" in card
    assert "iphone: accuracy not measured in coremltools (Core ML predictions need macOS)" in card
    assert "iphone: latency on Google Pixel 3 CPU is an estimate of the cost model" in card
    assert "_Not stated (set `card.out_of_scope` in the config)._" in card
    assert "data_fingerprint" not in card and "fingerprint `ffffffffffffffff`" in card


def test_the_api_takes_a_path_toml_text_or_a_dict_and_names_bad_keys(tmp_path):
    text = textwrap.dedent(TINY.format(targets='[[targets]]\nname = "server"\nformat = "onnx"\n'))
    path = tmp_path / "tiny.toml"
    path.write_text(text)
    for config in (path, str(path), text, tomllib.loads(text)):
        cfg, _, _ = config_of(config)
        assert cfg.targets[0].name == "server" and cfg.release.max_accuracy_drop == 1.0
    bad = tomllib.loads(text)
    bad["release"] = {"max_size_growth": 5}
    with pytest.raises(ConfigError, match="release.max_size_growth = 5: unknown key \\(did you mean 'max_size_increase'\\?\\)"):
        edgekiln.run(bad, out=tmp_path / "out", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "out").exists()


# --- end to end, on the session's shared tiny run -------------------------------------------

def test_a_changed_run_diffs_against_the_release_names_the_regression_and_exits_1(run, tmp_path):
    root, _, base = run
    # The new run, through the Python API with a dict config: the server target now ships fp32
    # (only the export stage runs again).
    config = tomllib.loads(textwrap.dedent(TINY.format(
        targets='[[targets]]\nname = "server"\nprofile = "x86-server-avx2"\nencoding = ["fp32"]\n')))
    result = edgekiln.run(config, out=tmp_path / "new", cache_dir=root / "cache", junit=tmp_path / "run.xml")
    assert isinstance(result, edgekiln.RunResult) and result.passed and result.error is None
    assert [a.target for a in result.artifacts] == ["server"] and result.artifacts[0].encoding == "fp32"
    assert {g.subject for g in result.gates} >= {"stage distill", "target server"}
    assert result.paths["artifact:server"].is_file() and result.paths["report_html"].is_file()
    assert all(outcome != "failure" for _, _, outcome, _ in _junit(tmp_path / "run.xml"))

    out = CliRunner().invoke(app, ["diff", str(root / "out"), str(tmp_path / "new"), "--json",
                                   str(tmp_path / "diff.json"), "--junit", str(tmp_path / "diff.xml"),
                                   "--html", str(tmp_path / "diff.html")])
    assert out.exit_code == 1, out.output
    text = " ".join(out.output.split())
    assert "REGRESSION server: size" in text and "over release.max_size_increase = 10" in text
    record = json.loads((tmp_path / "diff.json").read_text())
    assert record["passed"] is False and any(r.startswith("REGRESSION server: size") for r in record["regressions"])
    assert {t["target"]: t["status"] for t in record["targets"]} == {
        "server": "compared", "android": "removed", "iphone": "removed"}
    server = next(t for t in record["targets"] if t["target"] == "server")
    paired = next(c for c in server["changes"] if c["metric"] == "test accuracy")["paired"]
    assert paired["images"] == base["splits"]["test"]  # both runs' predictions.json: image by image
    cases = _junit(tmp_path / "diff.xml")
    assert ("edgekiln.diff.target.server", "size", "failure") in [c[:3] for c in cases]
    assert [c[2] for c in cases if c[0].endswith(("android", "iphone"))] == ["skipped", "skipped"]
    page = (tmp_path / "diff.html").read_text()
    assert 'id="diff-table"' in page and "REGRESSION: over release.max_size_increase" in page
    # the same comparison as a Python call
    assert not edgekiln.diff(root / "out", tmp_path / "new").passed


def _render(page, tmp_path, width: int = 1400):
    """Open `page` in headless Chromium in a window `width` px wide and read back, from the
    rendered DOM, the verdict, each image's decoded and shown size, each table's rendered
    height and how far its widest column reaches, and the page's own width."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        why = "no headless browser (apt-get install chromium; .ci/run installs it)"
        pytest.fail(why) if os.environ.get("EDGEKILN_REQUIRE_BROWSER") else pytest.skip(why)
    harness = page.parent / "harness.html"
    harness.write_text(f"""<!DOCTYPE html><html><body><pre id="result">pending</pre>
<iframe id="f" src="{page.name}" style="width:{width}px;height:900px;border:0"></iframe><script>
document.getElementById("f").addEventListener("load", () => {{
  const d = document.getElementById("f").contentDocument;
  document.getElementById("result").textContent = JSON.stringify({{
    verdict: d.getElementById("verdict").textContent,
    viewport: d.documentElement.clientWidth, page_width: d.documentElement.scrollWidth,
    has_viewport_meta: !!d.querySelector('meta[name="viewport"]'),
    images: [...d.images].map(i => ({{id: i.id, complete: i.complete, width: i.naturalWidth,
                                      right: i.getBoundingClientRect().right}})),
    tables: Object.fromEntries([...d.querySelectorAll("table")].map((t, n) => [t.id || `table-${{n}}`, {{
      rows: t.rows.length, height: t.getBoundingClientRect().height,
      right: Math.max(...[...t.querySelectorAll("th, td")].map(c => c.getBoundingClientRect().right))}}]))}});
}});</script></body></html>""")
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
                           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", "--dump-dom",
                           harness.as_uri()], capture_output=True, text=True, timeout=120)
    dom = done.stdout
    assert '<pre id="result">' in dom, done.stderr[-2000:]
    import html

    return json.loads(html.unescape(dom.split('<pre id="result">')[1].split("</pre>")[0]))


def test_report_html_is_self_contained_and_renders_its_tables_and_plots_in_a_browser(run, tmp_path):
    root, _, manifest = run
    page = tmp_path / "report.html"
    shutil.copy(root / "out" / "report.html", page)  # alone: nothing beside it to load
    text = page.read_text()
    assert "http://" not in text and "https://" not in text and "<link" not in text
    for width in (900, 1400):  # a laptop's half screen and a full one: every column visible, nothing to scroll
        rendered = _render(page, tmp_path, width)
        assert rendered["has_viewport_meta"] and rendered["page_width"] <= rendered["viewport"] <= width, rendered
        assert all(t["right"] <= rendered["viewport"] for t in rendered["tables"].values()), (width, rendered["tables"])
        assert all(i["right"] <= rendered["viewport"] for i in rendered["images"]), (width, rendered["images"])
    unchecked = len(manifest["unchecked"])
    assert rendered["verdict"] == manifest["verdict"] == \
        f"PASSED with {unchecked} budget{'' if unchecked == 1 else 's'} not checked"
    assert [(i["id"], i["complete"], i["width"] > 300) for i in rendered["images"]] == [
        ("plot-report", True, True), ("plot-tradeoff", True, True)]
    tables = rendered["tables"]
    assert tables["artifact-table"]["rows"] == 1 + len(manifest["artifacts"])
    assert tables["stage-table"]["rows"] == 1 + len(manifest["stages"])
    assert tables["teacher-table"]["rows"] == 1 + len(manifest["teacher"]["candidates"])
    assert all(t["height"] > 20 for t in tables.values())
    for a in manifest["artifacts"]:  # every artifact's gates, by message
        assert a["target"] in text and a["sha256"][:16] in text
    assert "What was not measured" in text and "iphone: accuracy not measured in coremltools" in text


def test_the_report_of_targets_without_a_profile_renders_in_a_browser(profileless_run, tmp_path):
    work, _, manifest = profileless_run
    page = tmp_path / "report.html"
    shutil.copy(work / "out" / "report.html", page)
    rendered = _render(page, tmp_path)
    assert rendered["verdict"] == manifest["verdict"] == "PASSED" and manifest["unchecked"] == []
    assert [(i["id"], i["complete"]) for i in rendered["images"]] == [("plot-report", True), ("plot-tradeoff", True)]
    assert rendered["tables"]["artifact-table"]["rows"] == 1 + len(manifest["artifacts"]) == 4


def test_a_wrong_typed_release_threshold_in_the_manifest_is_bad_input_naming_it(tmp_path):
    new = _manifest(_artifact(), release={"max_accuracy_drop": "lots"})
    base, new = _write(tmp_path, "base", _manifest(_artifact())), _write(tmp_path, "new", new)
    result = CliRunner().invoke(app, ["diff", str(base), str(new)])
    assert result.exit_code == 2, result.output
    assert "release.max_accuracy_drop = 'lots'" in " ".join(result.stderr.split())


def test_diff_needs_no_torch(tmp_path):
    """A release job's comparison answers in well under a second: it reads two manifests."""
    base, new = _write(tmp_path, "base", _manifest(_artifact())), _write(tmp_path, "new", _manifest(_artifact()))
    code = ("import sys; from typer.testing import CliRunner; from edgekiln.interfaces.cli import app; "
            f"result = CliRunner().invoke(app, ['diff', {str(base)!r}, {str(new)!r}]); "
            "assert result.exit_code == 0, result.output; "
            "assert not [m for m in sys.modules if m.split('.')[0] in ('torch', 'timm', 'onnxruntime')], 'imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]


def test_report_rewrites_the_pages_with_the_deltas_and_run_refuses_a_bad_base_before_any_work(run, tmp_path):
    root, _, manifest = run
    out = tmp_path / "out"
    shutil.copytree(root / "out", out)
    base = json.loads(json.dumps(manifest))
    base["artifacts"][0]["size_bytes"] //= 2
    result = CliRunner().invoke(app, ["report", str(out), "--compare", str(_write(tmp_path, "base", base))])
    assert result.exit_code == 0, result.output
    page = (out / "report.html").read_text()
    assert 'id="diff-table"' in page and "1 regression(s) beyond the thresholds" in page
    assert ">REGRESSED<" in page  # the run passed its gates; the verdict still says it regressed
    assert "# Model card" in (out / "MODEL_CARD.md").read_text()

    config = tmp_path / "tiny.toml"
    config.write_text(textwrap.dedent(TINY.format(targets='[[targets]]\nname = "server"\nformat = "onnx"\n')))
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(tmp_path / "new"), "--cache-dir",
                                      str(tmp_path / "cache"), "--compare", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "no manifest.json there" in result.stderr
    assert not (tmp_path / "cache").exists()
