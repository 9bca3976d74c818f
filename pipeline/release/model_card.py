"""MODEL_CARD.md: what a run produced, for the people who will ship it. Every figure comes from
the manifest; the `[card]` section adds what the model is for."""

from __future__ import annotations

from pathlib import Path

from edgekiln.engine.manifest import write_text
from edgekiln.figures import kilobytes
from edgekiln.gates import verdict
from edgekiln.release.lineage import lineage

_NO_LATENCY = "latency not measured: "


def not_measured(run) -> list[str]:
    """What the run's figures (its RunRecord's) do not rest on a measurement for, one line per
    artifact and gap, with the reason where the run recorded one."""
    lines = []
    for a in run.artifacts:
        if a.accuracy_source == "proxy":
            lines.append(f"{a.target}: accuracy not measured in {a.runtime or a.format} "
                         f"({a.accuracy_not_measured}); the figure is the torch-side proxy of the same model")
        if a.latency_source == "estimate":
            lines.append(f"{a.target}: latency on {a.device or a.profile} is an estimate of the cost model, "
                         "not a measurement on the device")
        elif a.latency_source is None:
            why = next((n[len(_NO_LATENCY):] for n in a.latency_notes if n.startswith(_NO_LATENCY)),
                       "no profile measured or estimated it")
            lines.append(f"{a.target}: latency not measured: {why}")
        elif a.latency_source == "host" and (a.profile or "").startswith("host-"):
            lines.append(f"{a.target}: latency is this build machine's ({a.device}), not a device's")
        lines += [f"{a.target}: {line}" for line in a.budgets_not_checked]
    return lines


def _pct(value, ci=None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}%" + ("" if not ci else f" [{ci[0]:.1f}, {ci[1]:.1f}]")


def _described(value) -> str:
    """An interface entry (text, or a dict of its properties) as one line of text."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return str(value)


def model_card(run) -> str:
    """The card as Markdown (`run`: the RunRecord); an absent figure is "-"."""
    card = run.config.card
    models = lineage(run)
    splits, pre, labels, plan = run.splits, run.preprocessing, run.labels, run.plan
    named = [f"{name}" for _, name, _ in models if name]
    title = card.name or (" from ".join(reversed(named)) if named else "model")
    out = [f"# Model card: {title}", ""]
    out += [f"Built by edgekiln {run.edgekiln_version} on {run.created}; "
            f"verdict: **{run.verdict or verdict(run.passed, len(run.unchecked))}**"
            + (f" (error: {run.error})" if run.error else "") + ".", ""]
    if run.unchecked:
        out += ["Budgets not checked (neither met nor failed; measure on the device or calibrate the profile):", ""]
        out += [f"- {line}" for line in run.unchecked] + [""]
    if plan.stages:
        skipped = "; ".join(f"{s.stage} ({s.why})" for s in plan.skipped if s.stage)
        out += [f"Stages: {' → '.join(plan.stages)}, every drop measured against {plan.reference_title}"
                + (f". Skipped: {skipped}" if skipped else "") + ".", ""]
    if run.branches:  # a student per group of targets
        out += ["A student per group of targets (the stages after the student search ran once per student):", ""]
        out += [f"- {b.student} for {', '.join(b.targets)}: " + "; ".join(str(w.why) for w in b.why)
                for b in run.branches] + [""]
    for key, heading in (("description", "Description"), ("intended_use", "Intended use"),
                         ("out_of_scope", "Out of scope"), ("limitations", "Limitations")):
        out += [f"## {heading}", "", getattr(card, key) or f"_Not stated (set `card.{key}` in the config)._", ""]
    if card.owner or card.license:
        out += [f"Owner: {card.owner or '-'} · License: {card.license or '-'}", ""]
    out += ["## Inputs and outputs", "",
            f"- Labels ({len(labels)}): " + ", ".join(f"`{label}`" for label in labels),
            f"- Preprocessing: {(pre and pre.image_size) or '?'} px RGB, mean {pre and pre.mean}, "
            f"std {pre and pre.std} (what each artifact expects is in its interface below)", ""]
    out += ["## Artifacts", "",
            f"| target | format | encoding | size | test accuracy (95% CI) | drop vs {plan.reference_title} "
            "| accuracy measured in | "
            "p50 latency | latency source | budgets met |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for a in run.artifacts:
        met = [g.budget_key or "?" for g in a.gates if g.passed]
        failed = [g.budget_key or "?" for g in a.gates if g.passed is False]
        p50 = "-" if a.p50_ms is None else f"{a.p50_ms:.3g} ms on {a.profile}"
        out.append(f"| {a.target} | {a.format} | {a.encoding or '-'} | {kilobytes(a.size_bytes)} | "
                   f"{_pct(a.test_accuracy if a.test_accuracy is not None else a.accuracy, a.test_accuracy_ci)} | "
                   f"{'-' if a.test_drop is None else f'{a.test_drop:+.2f} points'} | "
                   f"{a.runtime if a.accuracy_source == 'runtime' else 'torch proxy'} | {p50} | "
                   f"{a.latency_source or 'not measured'} | {', '.join(met) or '-'}"
                   + (f"; FAILED: {', '.join(failed)}" if failed else "") + " |")
    out.append("")
    for a in run.artifacts:
        if a.interface:
            out.append(f"- `{a.path}` ({a.target}): input {_described(a.interface.get('input'))}; "
                       f"output {_described(a.interface.get('output'))}")
    out += ["", "## Evaluation", ""]
    if splits and splits.test:
        out.append(f"Accuracies are on {splits.test} held-out test images that no choice of the pipeline looked "
                   f"at (one image = {100 / splits.test:.2f} points); every decision was made on {splits.val} "
                   f"val images. Members of each split: `{splits.file}` (sha256 `{splits.sha256}`).")
    else:
        out.append((splits and splits.note) or "No split record.")
    data = run.config.data
    fingerprint = splits and splits.data_fingerprint
    out += ["", f"Data: source `{data.source}`" + (f", path `{data.path}`" if data.path else "")
            + (f", fingerprint `{fingerprint}`" if fingerprint else "") + ".", ""]
    out += ["## Lineage", ""] + [f"- {what.capitalize()}: " + (f"`{name}` ({details})" if name else details)
                                 for what, name, details in models] + [""]
    out += ["## Not measured", ""] + [f"- {line}" for line in not_measured(run) or
                                      ["Everything above was measured (runtime accuracy, latency on its device or host)."]]
    out += ["", "## Tool versions", ""] + [f"- {k}: {v or 'not installed'}" for k, v in run.tool_versions.items()]
    return "\n".join(out) + "\n"


def write_model_card(run, path: Path) -> Path:
    """Write MODEL_CARD.md atomically."""
    return write_text(path, model_card(run))
