"""What stage `prune` adds to manifest.json and to the reports people read."""

from __future__ import annotations

from edgekiln.figures import millions, num, text
from edgekiln.stages.report import Maybe, StageReport


def _manifest(result, checks: dict) -> dict:
    return {"prune": None if result is None else {
        k: result.metrics.get(k) for k in ("target", "importance", "steps", "stopped", "recovery_distils_from",
                                            "self_distillation")}}


def _summary(m: dict, console) -> None:
    from rich.table import Table

    prune = m["prune"] or {}
    if len(prune.get("steps") or []) <= 2:
        return
    steps = Table(title=f"prune steps (importance = {prune.get('importance')})", title_justify="left")
    for col in ("step", "params", "MACs", "latency ms", "accuracy %", "note"):
        steps.add_column(col, justify="left" if col == "note" else "right")
    for p in prune["steps"]:
        latency = "-" if p["latency_ms"] is None else f"{p['latency_ms']:.3f} ({p['latency_source']})"
        steps.add_row(text(p["step"]), millions(p["params"]), millions(p["macs"]), latency, num(p["accuracy"]),
                      p["note"] or "")
    console.print(steps)
    console.print(f"prune: {text(prune['stopped'])}")


_HTML = """{% if m.prune and m.prune.steps %}
<h2 id="prune">Pruning steps <span class="note">(importance = {{ text(m.prune.importance) }}; {{ text(m.prune.stopped) }})</span></h2>
<table id="prune-table"><tr><th>step</th><th>params</th><th>MACs</th><th>latency ms</th><th>val %</th><th>note</th></tr>
{% for p in m.prune.steps %}<tr><td class="num">{{ text(p.step) }}</td><td class="num">{{ millions(p.params) }}</td><td class="num">{{ millions(p.macs) }}</td><td class="num">{% if p.latency_ms is not none %}{{ "%.3f"|format(p.latency_ms) }} ({{ p.latency_source }}){% else %}-{% endif %}</td><td class="num">{{ num(p.accuracy) }}</td><td>{{ p.note or "" }}</td></tr>{% endfor %}
</table>
{% endif %}"""


def _points(m: dict) -> list[dict]:
    """Every step: val accuracy, INT8 weight bytes (one a parameter), latency on its profile."""
    return [dict(kind="prune step", name=f"step {step['step']}", accuracy=step.get("accuracy"),
                 size=step.get("params"), latency=step.get("latency_ms"), chosen=False)
            for step in (m["prune"] or {}).get("steps") or []]


def _lineage(m: dict) -> tuple[str, str | None, str]:
    prune = m["prune"] or {}
    how = "; recovery by self-distillation from the given model" if prune.get("self_distillation") else ""
    return ("pruning", None, text(prune.get("stopped")) + how)


REPORT = StageReport(
    manifest=_manifest, fields={"prune": dict | None},
    view={"prune": Maybe({"target": None, "importance": None, "stopped": None,
                          "steps": [{"step": None, "params": None, "macs": None, "latency_ms": None,
                                     "latency_source": None, "accuracy": None, "note": None}]})},
    summary=_summary, html=_HTML, points=_points, lineage=_lineage, styles={"prune step": ("#55a868", "^")})
