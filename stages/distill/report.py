"""What stage `distill` adds to manifest.json and to the reports people read."""

from __future__ import annotations

from typing import Any

from edgekiln.figures import millions, num, text
from edgekiln.stages.report import Maybe, StageReport


def _manifest(result, checks: dict) -> dict:
    """The student search: every candidate, trained or dropped by the pre-check, and why."""
    if result is None or "student" not in result.metrics:
        return {"student": None}
    student = dict(result.metrics["student"])
    dropped = [{"name": d["name"], "accuracy": None, "epochs_trained": 0, "chosen": False,
                "why": f"dropped before training: {d['why']}"} for d in (checks.get("precheck") or {}).get("dropped", [])]
    student["candidates"] = student["candidates"] + dropped
    return {"student": student}


def student_name(m: dict) -> str | None:
    """The distilled student: the search's choice, or the one architecture configured."""
    chosen = (m.get("student") or {}).get("name")
    arch = ((m.get("config") or {}).get("student") or {}).get("arch")
    return chosen or (arch if isinstance(arch, str) else None)


def latency_text(candidate: dict) -> str:
    """A candidate's INT8 latency: on the one profile, or on each target group's (per target)."""
    by_group = candidate.get("latency_by_group")
    if by_group:
        return ", ".join(f"{group}: {num(ms, '.3g')}" for group, ms in by_group.items())
    return num(candidate.get("latency_ms"), ".3g")


def _summary(m: dict, console) -> None:
    from rich.table import Table

    student = m["student"]
    missed = (student or {}).get("missed_budget")
    if missed:
        from rich.markup import escape  # the advice names config keys in square brackets

        console.print("[bold red]no student within budget:[/] " + escape(
            f"the closest, {missed['closest']}, reached {missed['val_accuracy']:.2f}% on val, "
            f"{missed['short_by']:.2f} points short of {missed['needed']:.2f}%. Try: " + "; ".join(missed["try"])),
            soft_wrap=True)
    if not student or len(student["candidates"]) <= 1:
        return
    table = Table(title=f"student candidates (select = {student['select']})", title_justify="left")
    for col in ("candidate", "val %", "epochs", "params", "MACs", "INT8 KB", "latency ms", "chosen", "why"):
        table.add_column(col, justify="left" if col in ("candidate", "chosen", "why") else "right")
    for c in student["candidates"]:
        table.add_row(text(c["name"]), num(c["accuracy"], ".2f"), text(c["epochs_trained"]),
                      millions(c["params"]), millions(c["macs"]),
                      num(None if c["int8_bytes"] is None else c["int8_bytes"] / 1e3, ".0f"),
                      latency_text(c), "yes" if c["chosen"] else "no", c["why"] or "")
    console.print(table)


_HTML = """{% if m.student and m.student.missed_budget %}
<p id="student-missed-budget" class="fail"><strong>No student within budget:</strong> the closest, {{ m.student.missed_budget.closest }}, reached {{ num(m.student.missed_budget.val_accuracy) }} % on val, {{ num(m.student.missed_budget.short_by) }} points short of {{ num(m.student.missed_budget.needed) }} %. Try:</p>
<ul>{% for t in m.student.missed_budget.try %}<li>{{ t }}</li>{% endfor %}</ul>
{% endif %}{% if m.student and m.student.candidates %}
<h2 id="students">Student candidates <span class="note">(select = {{ text(m.student.select) }})</span></h2>
<table id="student-table"><tr><th>candidate</th><th>val %</th><th>epochs</th><th>params</th><th>MACs</th><th>INT8 KB</th><th>latency ms</th><th>chosen</th><th>why</th></tr>
{% for c in m.student.candidates %}<tr class="{{ 'chosen' if c.chosen else '' }}"><td>{{ c.name }}</td><td class="num">{{ num(c.accuracy) }}</td><td class="num">{{ text(c.epochs_trained) }}</td><td class="num">{{ millions(c.params) }}</td><td class="num">{{ millions(c.macs) }}</td><td class="num">{{ "-" if c.int8_bytes is none else "%.0f"|format(c.int8_bytes / 1e3) }}</td><td class="num">{% if c.latency_by_group %}{% for g, ms in c.latency_by_group.items() %}{{ g }}: {{ num(ms, ".3g") }}{% if not loop.last %}, {% endif %}{% endfor %}{% else %}{{ num(c.latency_ms, ".3g") }}{% endif %}</td><td>{{ "yes" if c.chosen else "no" }}</td><td>{{ c.why or "" }}</td></tr>{% endfor %}
</table>
{% endif %}"""


def _points(m: dict) -> list[dict]:
    """Every candidate student: val accuracy, INT8 weight bytes, latency on its profile."""
    return [dict(kind="student", name=c["name"], accuracy=c.get("accuracy"), size=c.get("int8_bytes"),
                 latency=c.get("latency_ms"), chosen=c.get("chosen", False))
            for c in (m["student"] or {}).get("candidates") or []]


def _lineage(m: dict) -> tuple[str, str | None, str]:
    student = m["student"] or {}
    unlabelled = student.get("unlabelled") or {}
    extra = (f"; KD also on {unlabelled['images']} unlabelled images ({unlabelled.get('path')})"
             if unlabelled.get("images") else "")
    return ("student", student_name(m), f"distilled (select = {student.get('select') or '-'}){extra}")


REPORT = StageReport(
    manifest=_manifest, fields={"student": dict[str, Any] | None},
    view={"student": Maybe({"name": None, "select": None, "missed_budget": None,
                            "candidates": [{"name": None, "accuracy": None, "epochs_trained": None,
                                            "params": None, "macs": None, "int8_bytes": None,
                                            "latency_ms": None, "latency_by_group": None, "chosen": None,
                                            "why": None}]})},
    summary=_summary, html=_HTML, points=_points, lineage=_lineage, styles={"student": ("#4c72b0", "o")})
