"""The run's figures as PNG: accuracy per stage and artifact, and latency against budgets,
measured and estimated latencies on separate axes (report.png); accuracy against size and
latency for every candidate the run evaluated (tradeoff.png). report.html inlines both.
Every figure is laid out so that no text is clipped or printed over another (text_problems
checks it; a value label that would collide is left out: the tables have every figure)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from edgekiln import stages as registry

_FAIL, _PASS, _NONE = "#c44e52", "#4c72b0", "gray"
_SOURCES = {"host": "#55a868", "device": "#4c72b0"}


def draw(run, directory: Path) -> dict[str, Path]:
    """Both figures of a run (its RunRecord) into `directory`, by the names report.html knows
    them by; an absent figure is drawn as "-" or "not measured"."""
    return {"report": plot(run, directory / "report.png"),
            "tradeoff": tradeoff(run, directory / "tradeoff.png")}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path


def plot(run, path: Path) -> Path:
    """report.png (report_figure) of a RunRecord."""
    return _save(report_figure(run), path)


def tradeoff(run, path: Path) -> Path:
    """tradeoff.png (tradeoff_figure) of a RunRecord."""
    return _save(tradeoff_figure(run), path)


def report_figure(run):
    """Left: accuracy after each stage and of each artifact, with the total budget as a line.
    Then each artifact's p50 latency on its profile against its p50 budget: measured (host,
    device) on one axis, estimated (the profile's cost model) on another, never mixed."""
    plt = _pyplot()
    publisher = registry.publisher().name
    stages = [s for s in run.stages if s.name != publisher]  # the publisher's bars are its artifacts
    artifacts = run.artifacts
    estimated = [a for a in artifacts if a.latency_source == "estimate"]
    measured = [a for a in artifacts if a.latency_source != "estimate"]
    names = [s.name + (f" ({s.branch})" if s.branch else "") for s in stages] + [a.target for a in artifacts]
    panels = [len(names)] + ([len(measured)] if measured or not estimated else []) + ([len(estimated)] if estimated else [])
    widths = [max(n, 1) for n in panels]
    fig, axes = plt.subplots(1, len(panels), figsize=(max(9.0, 1.0 * sum(widths) + 2.2 * len(panels)), 4.8),
                             gridspec_kw={"width_ratios": widths}, layout="constrained", squeeze=False)
    axes = list(axes[0])
    labels = _plot_accuracy(axes[0], run, stages, artifacts, names)
    if measured or not estimated:
        labels += _plot_latency(axes[1], measured, estimated=False)
    if estimated:
        labels += _plot_latency(axes[-1], estimated, estimated=True)
    _lay_out(fig, labels)
    return fig


def _plot_accuracy(ax, run, stages: list, artifacts: list, names: list[str]) -> list:
    # The held-out test figures with their 95% intervals where the run has a test split.
    records = [*stages, *artifacts]
    on_test = all(r.test_accuracy is not None for r in records)
    split = "test" if on_test else "val"
    figures = [r.test_accuracy if on_test else r.accuracy for r in records]
    values = [0.0 if v is None else v for v in figures]  # an absent figure: no bar, labelled "-"
    intervals = [r.test_accuracy_ci for r in records] if on_test else []
    passed = [r.passed for r in records]
    kinds = ["stage"] * len(stages) + [a.accuracy_source for a in artifacts]
    colors = [_PASS if ok else _NONE if ok is None else _FAIL for ok in passed]
    bars = ax.bar(range(len(names)), values, color=colors)
    if intervals and all(intervals):
        ax.errorbar([i + 0.25 for i in range(len(values))], values, fmt="none", ecolor="black", capsize=3,
                    yerr=[[v - ci[0] for v, ci in zip(values, intervals)], [ci[1] - v for v, ci in zip(values, intervals)]])
    for bar, kind in zip(bars, kinds):
        if kind == "proxy":
            bar.set_hatch("//")
    plan = run.plan
    first = next((s for s in run.stages if s.name == plan.reference), None)
    reference = None if first is None else first.test_accuracy if on_test else first.accuracy
    budget = run.config.budget.max_drop_total
    if reference is not None and budget is not None:
        ax.axhline(reference - budget, color="gray", linestyle="--",
                   label=f"{plan.reference_title} - max_drop_total")
        ax.legend(loc="best", fontsize=8)
    low = min([v for v in figures if v is not None] + [100.0] + [ci[0] for ci in intervals if ci]) - 5
    ax.set_ylim(max(0.0, low), 100.5)
    ax.set_ylabel(f"{split} accuracy (%)" + (", 95% interval" if on_test else ""))
    ax.set_title("accuracy per stage and artifact")
    ax.set_xlabel("red: gate failed; hatched: accuracy from a torch proxy, not the runtime", fontsize=8)
    _tick_labels(ax, names)
    # inside the bar's top, clear of the interval's cap above it
    return [ax.text(bar.get_x() + bar.get_width() / 2, max(0.0, low) if v is None else v - 0.3,
                    "-" if v is None else f"{v:.1f}", ha="center", va="bottom" if v is None else "top", fontsize=8,
                    color="black" if v is None else "white", fontweight="bold")
            for bar, v in zip(bars, figures)]


def _plot_latency(ax, artifacts: list, estimated: bool) -> list:
    """p50 per artifact (ArtifactRecord) against its budget. Measured: bars by source.
    Estimated: hollow diamonds with the estimate's interval (the gate decides on its upper end)."""
    labels = []
    for i, a in enumerate(artifacts):
        p50 = a.p50_ms
        if p50 is None:
            labels.append(ax.text(i, 1.0, "not\nmeasured", ha="center", va="bottom", fontsize=8))
            continue
        if estimated:
            ax.plot([i], [p50], marker="D", markersize=9, markerfacecolor="none", markeredgecolor="#dd8452",
                    markeredgewidth=2, linestyle="none", label="estimate (cost model)")
        else:
            ax.bar(i, p50, color=_SOURCES.get(a.latency_source, _NONE), label=f"measured on {a.latency_source}")
        low_high = a.latency_ms.p50_interval
        if low_high:
            ax.errorbar(i, p50, yerr=[[p50 - low_high[0]], [low_high[1] - p50]], fmt="none", ecolor="black", capsize=4)
        budget = a.budget.get("p50_ms")
        if budget is not None:
            ax.hlines(budget, i - 0.4, i + 0.4, color=_FAIL, linestyle="--", label="p50 budget")
        labels.append(ax.text(i + (0.12 if estimated else 0), p50, f"{p50:.3g}", ha="left" if estimated else "center",
                              va="bottom", fontsize=8))
    _tick_labels(ax, [f"{a.target}\n{a.profile or ''}" for a in artifacts])
    ax.set_xlim(-0.6, max(len(artifacts), 1) - 0.4)
    ax.set_yscale("log")
    if estimated:
        ax.set_ylabel("estimated p50 (ms, log): not measured")
        ax.set_title("estimated latency")
        ax.set_xlabel("the profile's cost model; bars: its interval", fontsize=8)
    else:
        ax.set_ylabel("measured p50 (ms, log)")
        ax.set_title("measured latency")
    handles, names = ax.get_legend_handles_labels()
    unique = dict(zip(names, handles))
    if unique:
        ax.legend(unique.values(), unique.keys(), loc="best", fontsize=7)
    return labels


def _tick_labels(ax, names: list[str]) -> None:
    """Names under the bars, slanted when they would not fit side by side."""
    longest = max((max(len(line) for line in n.split("\n")) for n in names), default=0)
    upright = len(names) > 1 and longest > 9  # side by side they would run into each other
    ax.set_xticks(range(len(names)), names, fontsize=7 if upright else 8, rotation=90 if upright else 0)


def candidate_points(run) -> list[dict]:
    """Every model the run evaluated, as (kind, name, val accuracy, size bytes, latency ms,
    whether that latency is an estimate): each stage's (teacher candidates, student
    candidates, prune steps), encodings tried, and the shipped artifacts (`shipped`).
    `run`: the RunRecord. Val throughout: it is what each choice was made on.
    Size is the file for artifacts and encodings; for models never exported it is counted
    from the parameters (4 bytes each for teachers in float, 1 for INT8 students and prune steps)."""
    points = [point for stage in registry.registered() if stage.reporting.points
              for point in stage.reporting.points(run)]
    for a in run.artifacts:
        for c in a.encoding_choice.candidates if a.encoding_choice else []:
            points.append(dict(kind="encoding", name=f"{a.target} {c.encoding}", accuracy=c.accuracy,
                               size=c.size_bytes, latency=c.p50_ms, chosen=False,
                               estimated=c.latency_source == "estimate"))
        points.append(dict(kind="shipped", name=a.target, accuracy=a.accuracy, size=a.size_bytes, latency=a.p50_ms,
                           chosen=True, estimated=a.latency_source == "estimate"))
    return [{"estimated": False, **p} for p in points if p["accuracy"] is not None]


_STYLE = {"encoding": ("#dd8452", "D"), "shipped": (_FAIL, "*")}


def _styles() -> dict[str, tuple[str, str]]:
    """Colour and marker of each kind of point: the stages' kinds, then encodings and artifacts."""
    return {kind: style for stage in registry.registered() for kind, style in stage.reporting.styles.items()} | _STYLE


def tradeoff_figure(run):
    """Val accuracy against size (left) and against latency (right) for every candidate the
    run evaluated, the shipped artifacts as stars; on the latency axis an estimated latency
    is a hollow marker, a measured one filled. Names label the shipped and chosen points
    first, then the others where there is room."""
    plt = _pyplot()
    points = candidate_points(run)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), layout="constrained")
    labels = []
    for ax, key, label in ((axes[0], "size", "size (MB, log)"), (axes[1], "latency", "p50 latency (ms, log)")):
        shown = [p for p in points if p[key]]
        scale = 1e6 if key == "size" else 1.0
        for kind, (color, marker) in _styles().items():
            group = [p for p in shown if p["kind"] == kind]
            for hollow in (False, True):
                part = [p for p in group if (key == "latency" and p["estimated"]) == hollow]
                if not part:
                    continue
                ax.scatter([p[key] / scale for p in part], [p["accuracy"] for p in part], marker=marker,
                           s=160 if kind == "shipped" else 40, zorder=3 if kind == "shipped" else 2,
                           facecolors="none" if hollow else color, edgecolors=color if hollow else (
                               "black" if kind == "shipped" else "none"), linewidths=1.5 if hollow else 1.0,
                           label=f"{kind} (estimated)" if hollow else kind)
        for p in sorted(shown, key=lambda p: (p["kind"] != "shipped", not p["chosen"])):
            labels.append(ax.annotate(p["name"], (p[key] / scale, p["accuracy"]), fontsize=6, xytext=(3, 3),
                                      textcoords="offset points"))
        missing = len(points) - len(shown)
        ax.set_xscale("log")
        notes = ([f"{missing} without a figure not shown"] if missing else []) + (
            ["hollow: estimated, not measured"] if key == "latency" and any(p["estimated"] for p in shown) else [])
        ax.set_xlabel(label + (f" ({'; '.join(notes)})" if notes else ""))
        ax.set_ylabel("val accuracy (%)")
        ax.grid(alpha=0.3)
        if shown:
            ax.legend(fontsize=7, loc="best")
    axes[0].set_title("accuracy vs size (models never exported: from their parameters)", fontsize=9)
    axes[1].set_title("accuracy vs latency (teachers: torch on this host; the others: their profile)", fontsize=9)
    _lay_out(fig, labels)
    return fig


def _lay_out(fig, labels: list) -> None:
    """Titles wrapped to their axes' width; then every label (a bar's value, a point's name),
    in the order given, kept only where it overlaps no text placed before it and no legend."""
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    wrapped = False
    for ax in fig.axes:
        width = ax.get_window_extent(renderer).width
        for text in (ax.title, ax.xaxis.label):
            if text.get_text() and text.get_window_extent(renderer).width > width:
                chars = max(12, int(len(text.get_text()) * width / text.get_window_extent(renderer).width) - 2)
                text.set_text(textwrap.fill(text.get_text().replace("\n", " "), chars))
                wrapped = True
    if wrapped:  # the layout again, around the wrapped titles (each pass costs a few tenths of a second)
        fig.draw_without_rendering()
    # a log axis labels some minor ticks: the first to go where they run into other text
    labels = labels + [t for ax in fig.axes for axis in (ax.xaxis, ax.yaxis)
                       for t in _tick_texts(axis, minor=True) if t.get_text()]
    label_ids = {id(t) for t in labels}
    placed = [_box(t, renderer) for t in _texts(fig) if id(t) not in label_ids]
    placed += [ax.get_legend().get_window_extent(renderer) for ax in fig.axes if ax.get_legend()]
    for text in labels:
        box = _box(text, renderer)
        if any(box.overlaps(other) for other in placed) or not _inside(box, fig):
            text.set_visible(False)
        else:
            placed.append(box)


def _texts(fig) -> list:
    """Every visible, non-empty text of the figure: titles, axis labels, tick labels, the
    texts and annotations placed on the axes, the legends' entries."""
    out = []
    for ax in fig.axes:
        out += [ax.title, ax.xaxis.label, ax.yaxis.label, *_tick_texts(ax.xaxis), *_tick_texts(ax.yaxis), *ax.texts]
        if ax.get_legend():
            out += ax.get_legend().get_texts()
    return [t for t in out if t.get_visible() and t.get_text().strip()]


def _tick_texts(axis, minor: bool | None = None) -> list:
    """The tick labels an axis draws (major, minor or, with None, both): those of ticks
    within its view (matplotlib also keeps labels of ticks beyond the limits, undrawn)."""
    low, high = sorted(axis.get_view_interval())
    span = (high - low) * 1e-9
    ticks = ([] if minor is True else axis.get_major_ticks()) + ([] if minor is False else axis.get_minor_ticks())
    return [tick.label1 for tick in ticks if low - span <= tick.get_loc() <= high + span]


def _box(text, renderer, shrink: float = 1.0):
    """A text's extent on the canvas, a pixel in from each side (touching is not overlapping)."""
    box = text.get_window_extent(renderer)
    return box.expanded((box.width - 2 * shrink) / box.width if box.width > 2 * shrink else 1.0,
                        (box.height - 2 * shrink) / box.height if box.height > 2 * shrink else 1.0)


def _inside(box, fig) -> bool:
    canvas = fig.bbox
    return box.x0 >= canvas.x0 - 1 and box.y0 >= canvas.y0 - 1 and box.x1 <= canvas.x1 + 1 and box.y1 <= canvas.y1 + 1


def text_problems(fig) -> list[str]:
    """Every text of `fig` clipped by the canvas or printed over another text of it (for the
    tests: a figure the report shows has none). Texts on different axes count too."""
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    texts = _texts(fig)
    boxes = [_box(t, renderer) for t in texts]
    problems = [f"clipped: {t.get_text()!r}" for t, b in zip(texts, boxes) if not _inside(b, fig)]
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    for i, (a, box_a) in enumerate(zip(texts, boxes)):
        for b, box_b in zip(texts[i + 1:], boxes[i + 1:]):
            same_legend = any(a in legend.get_texts() and b in legend.get_texts() for legend in legends)
            if not same_legend and box_a.overlaps(box_b):
                problems.append(f"overlap: {a.get_text()!r} and {b.get_text()!r}")
    return problems
