"""Pictures that do not mislead: report.png and tradeoff.png have no clipped or overprinted
text at the size the report shows them, and an estimated latency is never drawn on the axis
of measured ones."""

import copy

import pytest

from edgekiln.release import plots
from edgekiln.engine.manifest_schema import run_record


@pytest.fixture(scope="module")
def manifest(run):
    return run_record(copy.deepcopy(run[2]))


def _crowded(record, copies: int = 3):
    """The run with every artifact repeated under longer names: more bars, more labels."""
    return record.model_copy(update={"artifacts": [a.model_copy(update={"target": f"{a.target}-release-candidate-{n}"})
                                                   for n in range(copies) for a in record.artifacts]})


@pytest.mark.parametrize("crowd", [False, True], ids=["the run", "three times its targets"])
def test_no_text_is_clipped_or_printed_over_another(manifest, crowd):
    shown = _crowded(manifest) if crowd else manifest
    for figure in (plots.report_figure(shown), plots.tradeoff_figure(shown)):
        assert plots.text_problems(figure) == []


def test_a_figure_with_overprinted_text_is_found(manifest):
    figure = plots.report_figure(manifest)
    ax = figure.axes[0]
    ax.text(0, 99, "one label"), ax.text(0, 99, "on another")
    ax.set_title("a title far too long for its axis " * 8)
    problems = plots.text_problems(figure)
    assert "overlap: 'one label' and 'on another'" in problems
    assert any(p.startswith("clipped: 'a title far too long") for p in problems)


def test_estimated_latencies_get_their_own_axis_and_marker(manifest):
    sources = {a.target: a.latency_source for a in manifest.artifacts}
    assert "estimate" in sources.values() and {"host"} & set(sources.values())  # the tiny run has both
    figure = plots.report_figure(manifest)
    measured, estimated = figure.axes[1], figure.axes[2]
    assert measured.get_ylabel() == "measured p50 (ms, log)" and measured.get_title().split() == ["measured", "latency"]
    assert estimated.get_ylabel().startswith("estimated p50") and "not measured" in estimated.get_ylabel()
    ticks = lambda ax: [t.get_text().split("\n")[0] for t in ax.get_xticklabels()]  # noqa: E731
    assert ticks(measured) == [t for t, s in sources.items() if s != "estimate"]
    assert ticks(estimated) == [t for t, s in sources.items() if s == "estimate"]
    assert not estimated.patches  # markers, not bars: nothing on it looks like a measurement
    # on the trade-off plot an estimated latency is a hollow marker, and the axis says so
    latency_axis = plots.tradeoff_figure(manifest).axes[1]
    assert "hollow: estimated, not measured" in " ".join(latency_axis.get_xlabel().split())
    assert any("(estimated)" in text.get_text() for text in latency_axis.get_legend().get_texts())
