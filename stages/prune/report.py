"""What stage `prune` adds to manifest.json and to the reports people read."""

from __future__ import annotations

from edgekiln.figures import millions, num, text
from edgekiln.stages.prune.records import PruneRecord
from edgekiln.stages.report import StageReport
from edgekiln.system.records import dumped


def _manifest(result, checks: dict) -> dict:
    return {"prune": None if result is None else dumped(result.figures)}


def _summary(m, console) -> None:
    from rich.table import Table

    prune = m.prune or PruneRecord()
    if len(prune.steps) <= 2:
        return
    steps = Table(title=f"prune steps (importance = {prune.importance})", title_justify="left")
    for col in ("step", "params", "MACs", "latency ms", "accuracy %", "note"):
        steps.add_column(col, justify="left" if col == "note" else "right")
    for p in prune.steps:
        latency = "-" if p.latency_ms is None else f"{p.latency_ms:.3f} ({p.latency_source})"
        steps.add_row(text(p.step), millions(p.params), millions(p.macs), latency, num(p.accuracy), p.note or "")
    console.print(steps)
    console.print(f"prune: {text(prune.stopped)}")


_HTML = """{% if m.prune and m.prune.steps %}
<h2 id="prune">Pruning steps <span class="note">(importance = {{ text(m.prune.importance) }}; {{ text(m.prune.stopped) }})</span></h2>
<table id="prune-table"><tr><th>step</th><th>params</th><th>MACs</th><th>latency ms</th><th>val %</th><th>note</th></tr>
{% for p in m.prune.steps %}<tr><td class="num">{{ text(p.step) }}</td><td class="num">{{ millions(p.params) }}</td><td class="num">{{ millions(p.macs) }}</td><td class="num">{% if p.latency_ms is not none %}{{ "%.3f"|format(p.latency_ms) }} ({{ p.latency_source }}){% else %}-{% endif %}</td><td class="num">{{ num(p.accuracy) }}</td><td>{{ p.note or "" }}</td></tr>{% endfor %}
</table>
{% endif %}"""


def _points(m) -> list[dict]:
    """Every step: val accuracy, INT8 weight bytes (one a parameter), latency on its profile."""
    return [dict(kind="prune step", name=f"step {step.step}", accuracy=step.accuracy, size=step.params,
                 latency=step.latency_ms, chosen=False)
            for step in (m.prune.steps if m.prune else [])]


def _lineage(m) -> tuple[str, str | None, str]:
    prune = m.prune or PruneRecord()
    how = "; recovery by self-distillation from the given model" if prune.self_distillation else ""
    return ("pruning", None, text(prune.stopped) + how)


REPORT = StageReport(
    figures=PruneRecord, manifest=_manifest, fields={"prune": PruneRecord | None},
    summary=_summary, html=_HTML, points=_points, lineage=_lineage, styles={"prune step": ("#55a868", "^")})
