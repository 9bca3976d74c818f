"""The run's figures as PNG: accuracy per stage and artifact, latency against budgets
(report.png), and accuracy against size and latency for every candidate the run evaluated
(tradeoff.png). report.html inlines both."""

from __future__ import annotations

from pathlib import Path

from edgekiln import stages as registry
from edgekiln.release.report_view import complete
from edgekiln.targets.artifact import Artifact


def draw(manifest: dict, directory: Path) -> dict[str, Path]:
    """Both figures of a run into `directory`, by the names report.html knows them by; an
    absent figure is drawn as "-" or "not measured"."""
    manifest = complete(manifest)
    return {"report": plot(manifest, directory / "report.png"),
            "tradeoff": tradeoff(manifest, directory / "tradeoff.png")}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot(manifest: dict, path: Path) -> Path:
    """Left: accuracy after each stage and of each artifact, with the total budget as a line.
    Right: each artifact's p50 latency on its profile against its p50 budget, by source.
    `manifest`: report_view.complete's."""
    plt = _pyplot()
    publisher = registry.publisher().name
    stages = [s for s in manifest["stages"] if s["name"] != publisher]  # the publisher's bars are its artifacts
    artifacts = manifest["artifacts"]
    names = [str(s["name"]) for s in stages] + [str(a["target"]) for a in artifacts]
    # The held-out test figures with their 95% intervals where the run has a test split.
    on_test = all(r.get("test_accuracy") is not None for r in stages + artifacts)
    split = "test" if on_test else "val"
    figures = [r["test_accuracy"] if on_test else r["accuracy"] for r in stages + artifacts]
    values = [0.0 if v is None else v for v in figures]  # an absent figure: no bar, labelled "-"
    intervals = [r.get("test_accuracy_ci") for r in stages + artifacts] if on_test else []
    passed = [s["passed"] for s in stages] + [a["passed"] for a in artifacts]
    kinds = ["stage"] * len(stages) + [a["accuracy_source"] for a in artifacts]
    fig, (ax, lat_ax) = plt.subplots(1, 2, figsize=(1.2 * len(names) + 2 + 1.2 * len(artifacts) + 2, 4),
                                     gridspec_kw={"width_ratios": [max(len(names), 1), max(len(artifacts), 1)]})
    colors = ["#4c72b0" if ok else "gray" if ok is None else "#c44e52" for ok in passed]
    bars = ax.bar(names, values, color=colors)
    if intervals and all(intervals):
        ax.errorbar(range(len(values)), values, fmt="none", ecolor="black", capsize=3,
                    yerr=[[v - ci[0] for v, ci in zip(values, intervals)], [ci[1] - v for v, ci in zip(values, intervals)]])
    for bar, kind in zip(bars, kinds):
        if kind == "proxy":
            bar.set_hatch("//")
    plan = manifest["plan"] or {}
    first = next((s for s in manifest["stages"] if s["name"] == plan.get("reference")), {})
    reference = first.get("test_accuracy" if on_test else "accuracy")
    budget = manifest["config"]["budget"]["max_drop_total"]
    if reference is not None and budget is not None:
        ax.axhline(reference - budget, color="gray", linestyle="--",
                   label=f"{plan.get('reference_title')} - max_drop_total")
        ax.legend(loc="lower left")
    low = min([v for v in figures if v is not None] + [100.0] + [ci[0] for ci in intervals if ci]) - 5
    ax.set_ylim(max(0.0, low), 100.5)
    ax.set_ylabel(f"{split} accuracy (%)" + (", 95% interval" if on_test else ""))
    ax.set_title("accuracy (hatched: proxy, red: gate failed)")
    for bar, v in zip(bars, figures):
        ax.text(bar.get_x() + bar.get_width() / 2, max(0.0, low) if v is None else v,
                "-" if v is None else f"{v:.1f}", ha="center", va="bottom", fontsize=8)
    _plot_latency(lat_ax, artifacts)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plot_latency(ax, records: list[dict]) -> None:
    colors = {"host": "#55a868", "device": "#4c72b0", "estimate": "#dd8452"}
    artifacts = [Artifact.from_dict(r) for r in records]
    for i, a in enumerate(artifacts):
        p50 = a.p50_ms
        if p50 is None:
            ax.text(i, 0, "not\nmeasured", ha="center", va="bottom", fontsize=8)
            continue
        source = a.latency_source
        bar = ax.bar(i, p50, color=colors.get(source, "gray"), label=source)[0]
        if source == "estimate":
            bar.set_hatch("..")
        low_high = (a.latency_ms or {}).get("p50_interval")
        if low_high:  # an estimate's interval: the gate decides on its upper end
            ax.errorbar(i, p50, yerr=[[p50 - low_high[0]], [low_high[1] - p50]], fmt="none", ecolor="black", capsize=4)
        budget = a.budget.get("p50_ms")
        if budget is not None:
            ax.hlines(budget, i - 0.4, i + 0.4, color="#c44e52", linestyle="--")
            ax.text(i, budget, f"budget {budget:g}", ha="center", va="bottom", fontsize=7, color="#c44e52")
        ax.text(i, p50, f"{p50:.3g}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(artifacts)), [f"{a.target}\n{a.profile or ''}" for a in artifacts], fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("p50 latency (ms, log)")
    ax.set_title("latency on each profile (dashed: budget; bars on estimates: interval)")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    if unique:
        ax.legend(unique.values(), unique.keys(), loc="best", fontsize=7)


def candidate_points(manifest: dict) -> list[dict]:
    """Every model the run evaluated, as (kind, name, val accuracy, size bytes, latency ms):
    each stage's (teacher candidates, student candidates, prune steps), encodings tried, and
    the shipped artifacts (`shipped`). `manifest`: report_view.complete's. Val throughout: it is what each choice was made on. Size is the
    file for artifacts and encodings; for models never exported it is counted from the
    parameters (4 bytes each for teachers in float, 1 for INT8 students and prune steps)."""
    points = [point for stage in registry.registered() if stage.reporting.points
              for point in stage.reporting.points(manifest)]
    for a in manifest.get("artifacts") or []:
        for c in (a.get("encoding_choice") or {}).get("candidates") or []:
            points.append(dict(kind="encoding", name=f"{a['target']} {c['encoding']}", accuracy=c.get("accuracy"),
                               size=c.get("size_bytes"), latency=c.get("p50_ms"), chosen=False))
        points.append(dict(kind="shipped", name=a["target"], accuracy=a.get("accuracy"), size=a.get("size_bytes"),
                           latency=(a.get("latency_ms") or {}).get("p50"), chosen=True))
    return [p for p in points if p["accuracy"] is not None]


_STYLE = {"encoding": ("#dd8452", "D"), "shipped": ("#c44e52", "*")}


def _styles() -> dict[str, tuple[str, str]]:
    """Colour and marker of each kind of point: the stages' kinds, then encodings and artifacts."""
    return {kind: style for stage in registry.registered() for kind, style in stage.reporting.styles.items()} | _STYLE


def tradeoff(manifest: dict, path: Path) -> Path:
    """Val accuracy against size (left) and against latency (right) for every candidate the
    run evaluated, the shipped artifacts as stars."""
    plt = _pyplot()
    points = candidate_points(manifest)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, key, label in ((axes[0], "size", "size (MB, log)"), (axes[1], "latency", "p50 latency (ms, log)")):
        shown = [p for p in points if p[key]]
        for kind, (color, marker) in _styles().items():
            group = [p for p in shown if p["kind"] == kind]
            if not group:
                continue
            scale = 1e6 if key == "size" else 1.0
            ax.scatter([p[key] / scale for p in group], [p["accuracy"] for p in group], c=color, marker=marker,
                       s=160 if kind == "shipped" else 40, label=kind, edgecolors="black" if kind == "shipped" else "none",
                       zorder=3 if kind == "shipped" else 2)
            for p in group:
                ax.annotate(p["name"], (p[key] / scale, p["accuracy"]), fontsize=6, xytext=(3, 3),
                            textcoords="offset points")
        missing = len(points) - len(shown)
        ax.set_xscale("log")
        ax.set_xlabel(label + (f"; {missing} without a figure not shown" if missing else ""))
        ax.set_ylabel("val accuracy (%)")
        ax.grid(alpha=0.3)
        if shown:
            ax.legend(fontsize=7, loc="lower right")
    axes[0].set_title("accuracy vs size (unexported models: from their parameters)", fontsize=9)
    axes[1].set_title("accuracy vs latency (teachers: torch on this host; others: their profile)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
