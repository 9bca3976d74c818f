"""What a person reads after a run: the summary table on the console and report.png."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from edgekiln.stages.progress import console
from edgekiln.targets.artifact import Artifact


def _num(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _interval(pair, fmt: str = ".1f") -> str:
    return "-" if not pair else f"[{format(pair[0], fmt)}, {format(pair[1], fmt)}]"


def _with_interval(value, pair) -> str:
    return "-" if value is None else f"{value:.2f} {_interval(pair)}".strip(" -")


def _millions(value) -> str:
    return "-" if value is None else f"{value / 1e6:.2f}M"


def print_summary(manifest: dict, manifest_path: Path) -> None:
    """Teacher candidates, stage table, then one row per artifact, then the verdict."""
    teacher = manifest.get("teacher")
    if teacher and teacher.get("candidates"):
        candidates = Table(title=f"teacher candidates (select = {teacher.get('select', 'accuracy')})",
                           title_justify="left")
        for col in ("candidate", "accuracy %", "params", "MACs", "px", "host ms", "chosen", "why"):
            candidates.add_column(col, justify="left" if col in ("candidate", "chosen", "why") else "right")
        for c in teacher["candidates"]:
            candidates.add_row(c["name"], _num(c["accuracy"], ".2f"), _millions(c["params"]), _millions(c["macs"]),
                               str(c.get("input_size", "-")), _num(c.get("host_latency_ms"), ".2f"),
                               "yes" if c["chosen"] else "no", c.get("why", ""))
        console.print(candidates)
    student = manifest.get("student")
    if student and len(student.get("candidates") or []) > 1:
        table = Table(title=f"student candidates (select = {student['select']})", title_justify="left")
        for col in ("candidate", "val %", "epochs", "params", "MACs", "INT8 KB", "latency ms", "chosen", "why"):
            table.add_column(col, justify="left" if col in ("candidate", "chosen", "why") else "right")
        for c in student["candidates"]:
            table.add_row(c["name"], _num(c.get("accuracy"), ".2f"), str(c.get("epochs_trained", "-")),
                          _millions(c.get("params")), _millions(c.get("macs")),
                          _num(None if c.get("int8_bytes") is None else c["int8_bytes"] / 1e3, ".0f"),
                          _num(c.get("latency_ms"), ".3g"), "yes" if c["chosen"] else "no", c.get("why", ""))
        console.print(table)
    splits = manifest.get("splits") or {}
    stages = Table(title=f"stages (decided on val; test held out: {splits.get('test') or 0} images)",
                   title_justify="left")
    for col in ("stage", "val %", "drop", "budget", "test % (95% CI)", "params", "MACs", "cached",
                "seconds", "gate"):
        stages.add_column(col, justify="left" if col in ("stage", "gate") else "right")
    for s in manifest["stages"]:
        stages.add_row(s["name"], f"{s['accuracy']:.2f}", _num(s["drop"], "+.2f"), _num(s["budget"], "g"),
                       _with_interval(s.get("test_accuracy"), s.get("test_accuracy_ci")),
                       _millions(s["params"]), _millions(s["macs"]), "yes" if s["cached"] else "no",
                       f"{s['seconds']:.1f}", "pass" if s["passed"] else "[red]FAIL")
    console.print(stages)
    chance = 100.0 / max(len(manifest.get("labels") or []), 1)
    for s in manifest["stages"]:
        if s["accuracy"] <= chance + 0.5 * (100 - chance) / 10:  # within a twentieth of chance
            console.print(f"[bold yellow]warning:[/] stage {s['name']} is at chance ({s['accuracy']:.2f}% with "
                          f"{len(manifest['labels'])} classes): it learned nothing; check the data and the "
                          "learning rates before trusting any later figure")
    prune = manifest.get("prune") or {}
    if len(prune.get("steps") or []) > 2:
        steps = Table(title=f"prune steps (importance = {prune.get('importance')})", title_justify="left")
        for col in ("step", "params", "MACs", "latency ms", "accuracy %", "note"):
            steps.add_column(col, justify="left" if col == "note" else "right")
        for p in prune["steps"]:
            latency = "-" if p["latency_ms"] is None else f"{p['latency_ms']:.3f} ({p['latency_source']})"
            steps.add_row(str(p["step"]), _millions(p["params"]), _millions(p["macs"]), latency,
                          f"{p['accuracy']:.2f}", p["note"])
        console.print(steps)
        console.print(f"prune: {prune['stopped']}")
    quantize = manifest.get("quantize") or {}
    if quantize.get("qat"):
        qat = quantize["qat"]
        console.print(f"quantize: QAT {qat['epochs']} epochs -> {qat['accuracy']:.2f}% INT8-simulated "
                      f"(PTQ would give {quantize['ptq_accuracy']:.2f}%; {qat['float_accuracy']:.2f}% in float)")
    if manifest["artifacts"]:
        artifacts = Table(title="artifacts", title_justify="left")
        numeric = ("size", "val %", "test % (95% CI)", "drop vs teacher", "p50 ms", "p90 ms", "peak MB")
        for col in ("target", "format", "encoding", "size", "val %", "test % (95% CI)", "drop vs teacher",
                    "measured in", "profile", "p50 ms", "p90 ms", "peak MB", "latency from", "gate"):
            artifacts.add_column(col, justify="right" if col in numeric else "left")
        for a in map(Artifact.from_dict, manifest["artifacts"]):
            lat = a.latency_ms or {}
            drop = "-" if a.test_drop is None else f"{a.test_drop:+.2f} {_interval(a.drop_ci, '+.2f')}"
            artifacts.add_row(
                a.target, a.format, a.encoding, f"{a.size_bytes / 1e3:.0f} KB", f"{a.accuracy:.2f}",
                _with_interval(a.test_accuracy, a.test_accuracy_ci), drop,
                a.accuracy_source, a.profile or "-", _num(lat.get("p50"), ".3f"), _num(lat.get("p90"), ".3f"),
                _num(a.peak_memory_mb, ".1f"), a.latency_source or "not measured",
                "pass" if a.passed else "[red]FAIL")
        console.print(artifacts)
        if splits.get("test"):
            console.print(f"note: release gates are judged on the {splits['test']} held-out test images "
                          f"(one image = {100 / splits['test']:.2f} points); intervals are 95%: Clopper-Pearson "
                          f"for accuracy, exact paired (McNemar) for the drop. Members: {splits.get('file')}.")
        elif splits:
            console.print(f"note: {splits.get('note')}")
        for a in map(Artifact.from_dict, manifest["artifacts"]):
            if a.accuracy_source == "proxy":
                console.print(f"note: {a.target} ({a.format}) accuracy is a torch-side proxy, not measured "
                              f"in its runtime ({a.accuracy_not_measured}).")
            choice = a.encoding_choice
            if choice:
                tried = ", ".join(f"{c['encoding']} {_num(c['p50_ms'], '.3g')} ms {c['accuracy']:.2f}%"
                                  for c in choice["candidates"])
                console.print(f"note: {a.target}: {choice['chosen']} ships ({choice['why']}); tried {tried}")
            mixed = a.mixed_precision
            if mixed and mixed["applied"]:
                console.print(f"note: {a.target}: INT8 gave {a.int8_accuracy:.2f}% ({mixed['breach']}); "
                              f"{mixed['outcome']}: {', '.join(mixed['float_layers'])}")
            elif mixed:
                console.print(f"note: {a.target}: INT8 gave {a.int8_accuracy:.2f}% ({mixed['breach']}); "
                              f"{mixed['why_not']}")
            if a.quantization.get("activations"):
                console.print(f"note: {a.target}: activations {a.quantization['activations']}")
            for line in a.latency_notes + a.budgets_not_checked:
                console.print(f"note: {a.target}: {line}")
            if a.latency_source == "host" and (a.profile or "").startswith("host-"):
                console.print(f"note: {a.target}: latency is this machine's (no profile named), not a device's.")
    verdict = "[bold green]PASSED" if manifest["passed"] else "[bold red]FAILED"
    console.print(f"{verdict}[/] — manifest: {manifest_path}")


def plot(manifest: dict, path: Path) -> Path:
    """Left: accuracy after each stage and of each artifact, with the total budget as a line.
    Right: each artifact's p50 latency on its profile against its p50 budget, by source."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [s for s in manifest["stages"] if s["name"] != "export"]  # export = its artifacts' bars
    artifacts = manifest["artifacts"]
    names = [s["name"] for s in stages] + [a["target"] for a in artifacts]
    # The held-out test figures with their 95% intervals where the run has a test split.
    on_test = all(r.get("test_accuracy") is not None for r in stages + artifacts)
    split = "test" if on_test else "val"
    values = [r["test_accuracy"] if on_test else r["accuracy"] for r in stages + artifacts]
    intervals = [r.get("test_accuracy_ci") for r in stages + artifacts] if on_test else []
    passed = [s["passed"] for s in stages] + [a["passed"] for a in artifacts]
    kinds = ["stage"] * len(stages) + [a["accuracy_source"] for a in artifacts]
    fig, (ax, lat_ax) = plt.subplots(1, 2, figsize=(1.2 * len(names) + 2 + 1.2 * len(artifacts) + 2, 4),
                                     gridspec_kw={"width_ratios": [max(len(names), 1), max(len(artifacts), 1)]})
    colors = ["#4c72b0" if ok else "#c44e52" for ok in passed]
    bars = ax.bar(names, values, color=colors)
    if intervals and all(intervals):
        ax.errorbar(range(len(values)), values, fmt="none", ecolor="black", capsize=3,
                    yerr=[[v - ci[0] for v, ci in zip(values, intervals)], [ci[1] - v for v, ci in zip(values, intervals)]])
    for bar, kind in zip(bars, kinds):
        if kind == "proxy":
            bar.set_hatch("//")
    if manifest["teacher"]:
        reference = manifest["teacher"]["test_accuracy"] if on_test else manifest["teacher"]["accuracy"]
        floor = reference - manifest["config"]["budget"]["max_drop_total"]
        ax.axhline(floor, color="gray", linestyle="--", label="teacher - max_drop_total")
        ax.legend(loc="lower left")
    low = min(values + [100.0] + [ci[0] for ci in intervals if ci]) - 5
    ax.set_ylim(max(0.0, low), 100.5)
    ax.set_ylabel(f"{split} accuracy (%)" + (", 95% interval" if on_test else ""))
    ax.set_title("accuracy (hatched: proxy, red: gate failed)")
    for bar, v in zip(bars, values):
        ax.text(bar.get_x() + bar.get_width() / 2, v, f"{v:.1f}", ha="center", va="bottom", fontsize=8)
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
        budget = a.budget.get("p50_ms")
        if budget is not None:
            ax.hlines(budget, i - 0.4, i + 0.4, color="#c44e52", linestyle="--")
            ax.text(i, budget, f"budget {budget:g}", ha="center", va="bottom", fontsize=7, color="#c44e52")
        ax.text(i, p50, f"{p50:.3g}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(artifacts)), [f"{a.target}\n{a.profile or ''}" for a in artifacts], fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("p50 latency (ms, log)")
    ax.set_title("latency on each profile (dashed: budget)")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    if unique:
        ax.legend(unique.values(), unique.keys(), loc="best", fontsize=7)
