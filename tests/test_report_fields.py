"""Every report renders whatever optional figure is absent. From one complete manifest
(tests/data/complete_manifest.json: a real run's, with a student search, an encoding choice,
mixed precision, QAT and a report error grafted in), each field in turn is removed and then
set to null, read back as its RunRecord, and report.html (StrictUndefined: conftest),
MODEL_CARD.md, the console summary, JUnit and diff are rendered from it; the plots for every
field of the records they draw. A field a record cannot be without (an artifact's target)
is refused as the file is read, naming it: no report ever meets it missing."""

import copy
import io
import json
from pathlib import Path

import pytest

from edgekiln.engine.manifest_schema import run_record
from edgekiln.errors import InputError
from edgekiln.progress import console
from edgekiln.release import plots
from edgekiln.release.html_report import render
from edgekiln.release.junit import run_cases
from edgekiln.release.model_card import model_card
from edgekiln.release.regression import diff_runs
from edgekiln.release.summary import print_summary

COMPLETE = json.loads((Path(__file__).parent / "data" / "complete_manifest.json").read_text())

# What makes a record what it is: without these a manifest is not one (read_manifest's
# checks; the RunRecord requires them), so they are not optional.
REQUIRED = {("artifacts",), ("config",), ("stages", 0, "name"), ("branches", 0, "student"),
            *((("artifacts", i, key) for i in (0, 1) for key in ("target", "format")))}


def _paths(value, prefix=()):
    """Every key path in `value`, descending into the first element of each list (into every
    artifact: the two differ in which figures they have)."""
    if isinstance(value, dict):
        for key, sub in value.items():
            yield prefix + (key,)
            yield from _paths(sub, prefix + (key,))
    elif isinstance(value, list) and value:
        for index in range(len(value) if prefix == ("artifacts",) else 1):
            yield from _paths(value[index], prefix + (index,))


FIELDS = [p for p in _paths(COMPLETE) if p not in REQUIRED]


def _variant(path, how):
    manifest = copy.deepcopy(COMPLETE)
    parent = manifest
    for key in path[:-1]:
        parent = parent[key]
    if how == "missing":
        del parent[path[-1]]
    else:
        parent[path[-1]] = None
    return manifest


def _name(path):
    return ".".join(map(str, path))


@pytest.fixture(scope="module")
def base_release(tmp_path_factory):
    folder = tmp_path_factory.mktemp("base")
    (folder / "manifest.json").write_text(json.dumps(COMPLETE))
    return folder


def test_the_complete_manifest_covers_every_section_the_reports_read():
    assert len(FIELDS) > 150
    artifact = COMPLETE["artifacts"][1]
    for key in ("encoding_choice", "mixed_precision", "latency_ms", "budgets_not_checked", "gates"):
        assert artifact.get(key), key
    for key in ("teacher", "student", "prune", "quantize", "splits", "report_errors"):
        assert COMPLETE.get(key), key
    assert COMPLETE["artifacts"][0]["latency_ms"] is None  # the profile-less Core ML target itself
    run_record(COMPLETE)  # as read from the file


def test_a_field_a_record_cannot_be_without_is_refused_naming_it():
    for path in sorted(REQUIRED - {("artifacts",), ("config",)}):
        if path[0] not in COMPLETE:
            continue
        with pytest.raises(InputError, match=rf"{path[0]}\[{path[1]}\]\.{path[2]}: missing"):
            run_record(_variant(path, "missing"))


@pytest.mark.parametrize("how", ["missing", "null"])
def test_every_report_renders_with_any_one_field_absent(how, base_release, tmp_path):
    failures = []
    for path in FIELDS:
        manifest = _variant(path, how)
        new = tmp_path / "new"
        new.mkdir(exist_ok=True)
        (new / "manifest.json").write_text(json.dumps(manifest))
        try:
            record = run_record(manifest)
            page = render(record, {})
            assert 'id="artifact-table"' in page
            assert "# Model card" in model_card(record)
            if how == "null":  # missing and null read the same in a RunRecord
                with console.capture():
                    print_summary(record, new / "manifest.json")
            run_cases(record)
            diff_runs(base_release, new)
        except Exception as e:  # collect them all: one run names every field that breaks a report
            failures.append(f"{_name(path)} {how}: {type(e).__name__}: {e}")
    assert not failures, "\n".join(failures)


# The fields plots.py reads: (section, field) with list indexes left out.
PLOTTED = {("stages",): {"name", "accuracy", "test_accuracy", "test_accuracy_ci", "passed"},
           ("artifacts",): {"accuracy", "test_accuracy", "test_accuracy_ci", "passed", "accuracy_source",
                            "latency_ms", "latency_source", "budget", "profile", "size_bytes", "encoding_choice"},
           ("artifacts", "latency_ms"): {"p50", "p50_interval"},
           ("artifacts", "budget"): {"p50_ms"},
           ("artifacts", "encoding_choice"): {"candidates"},
           ("artifacts", "encoding_choice", "candidates"): {"encoding", "accuracy", "size_bytes", "p50_ms"},
           (): {"teacher", "student", "prune", "stages"},
           ("teacher",): {"accuracy", "test_accuracy", "candidates"},
           ("teacher", "candidates"): {"name", "accuracy", "params", "host_latency_ms", "chosen"},
           ("student",): {"candidates"},
           ("student", "candidates"): {"name", "accuracy", "int8_bytes", "latency_ms", "chosen"},
           ("prune",): {"steps"},
           ("prune", "steps"): {"step", "accuracy", "params", "latency_ms"},
           ("config", "budget"): {"max_drop_total"}}


def _read_by_plots(path):
    section = tuple(k for k in path[:-1] if not isinstance(k, int))
    return path[-1] in PLOTTED.get(section, ())


def test_the_plots_draw_with_any_one_drawn_field_absent(tmp_path, monkeypatch):
    """The plots read the RunRecord, in which a missing field and a null one are the same:
    one variant per field. The figures are built for each (every
    value goes through bar, text and errorbar) but laid out and encoded as PNG only for the
    complete manifest and for one with every drawn field null at once."""
    import matplotlib.figure

    drawn = [p for p in FIELDS if _read_by_plots(p)]
    assert len(drawn) > 40
    everything_null = copy.deepcopy(COMPLETE)
    for path in sorted(drawn, key=len, reverse=True):
        parent = everything_null
        for key in path[:-1]:
            parent = parent[key] if parent is not None else None
        if isinstance(parent, dict):
            parent[path[-1]] = None
    for manifest in (COMPLETE, everything_null):
        images = plots.draw(run_record(manifest), tmp_path)
        assert all(path.stat().st_size > 10_000 for path in images.values())
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda self, *a, **k: None)
    monkeypatch.setattr(plots, "_lay_out", lambda fig, labels: None)  # text placement: tests/test_plots.py
    failures = []
    for path in drawn:
        try:
            plots.draw(run_record(_variant(path, "null")), tmp_path)
        except Exception as e:
            failures.append(f"{_name(path)} null: {type(e).__name__}: {e}")
    assert not failures, "\n".join(failures)


def test_a_target_without_latency_says_why_in_every_report():
    manifest = run_record(copy.deepcopy(COMPLETE))
    page = render(manifest, {})
    card = model_card(manifest)
    why = "latency not measured: the host runner cannot time coreml here: Core ML predictions need macOS"
    assert why in page and why in card
    buffer = io.StringIO()
    with console.capture() as captured:
        print_summary(manifest, Path("manifest.json"))
    buffer.write(captured.get())
    assert "latency not measured" in buffer.getvalue()
