"""What stage `distill` adds to manifest.json and to the reports people read."""

from __future__ import annotations

from edgekiln.figures import millions, num, text
from edgekiln.stages.distill.records import DistillFigures, PrecheckRecord, StudentCandidate, StudentRecord
from edgekiln.stages.report import StageReport
from edgekiln.system.records import dumped


def _manifest(result, checks: dict) -> dict:
    """The student search: every candidate, trained or dropped by the pre-check, and why."""
    if result is None or result.figures.student is None:
        return {"student": None}
    student = dumped(result.figures.student)
    dropped = [{"name": d["name"], "accuracy": None, "epochs_trained": 0, "chosen": False,
                "why": f"dropped before training: {d['why']}"} for d in (checks.get("precheck") or {}).get("dropped", [])]
    student["candidates"] = student["candidates"] + dropped
    return {"student": student}


def student_name(m) -> str | None:
    """The distilled student: the search's choice, or the one architecture configured."""
    chosen = m.student.name if m.student else None
    arch = (m.config.model_extra.get("student") or {}).get("arch")
    return chosen or (arch if isinstance(arch, str) else None)


def latency_text(candidate: StudentCandidate) -> str:
    """A candidate's INT8 latency: on the one profile, or on each target group's (per target)."""
    if candidate.latency_by_group:
        return ", ".join(f"{group}: {num(ms, '.3g')}" for group, ms in candidate.latency_by_group.items())
    return num(candidate.latency_ms, ".3g")


def _summary(m, console) -> None:
    from rich.table import Table

    student = m.student
    missed = student.missed_budget if student else None
    if missed:
        from rich.markup import escape  # the advice names config keys in square brackets

        console.print("[bold red]no student within budget:[/] " + escape(
            f"the closest, {missed.closest}, reached {num(missed.val_accuracy)}% on val, "
            f"{num(missed.short_by)} points short of {num(missed.needed)}%. Try: " + "; ".join(missed.try_)),
            soft_wrap=True)
    if not student or len(student.candidates) <= 1:
        return
    table = Table(title=f"student candidates (select = {student.select})", title_justify="left")
    for col in ("candidate", "val %", "epochs", "params", "MACs", "INT8 KB", "latency ms", "chosen", "why"):
        table.add_column(col, justify="left" if col in ("candidate", "chosen", "why") else "right")
    for c in student.candidates:
        table.add_row(text(c.name), num(c.accuracy, ".2f"), text(c.epochs_trained),
                      millions(c.params), millions(c.macs),
                      num(None if c.int8_bytes is None else c.int8_bytes / 1e3, ".0f"),
                      latency_text(c), "yes" if c.chosen else "no", c.why or "")
    console.print(table)


_HTML = """{% if m.student and m.student.missed_budget %}
<p id="student-missed-budget" class="fail"><strong>No student within budget:</strong> the closest, {{ m.student.missed_budget.closest }}, reached {{ num(m.student.missed_budget.val_accuracy) }} % on val, {{ num(m.student.missed_budget.short_by) }} points short of {{ num(m.student.missed_budget.needed) }} %. Try:</p>
<ul>{% for t in m.student.missed_budget.try_ %}<li>{{ t }}</li>{% endfor %}</ul>
{% endif %}{% if m.student and m.student.candidates %}
<h2 id="students">Student candidates <span class="note">(select = {{ text(m.student.select) }})</span></h2>
<table id="student-table"><tr><th>candidate</th><th>val %</th><th>epochs</th><th>params</th><th>MACs</th><th>INT8 KB</th><th>latency ms</th><th>chosen</th><th>why</th></tr>
{% for c in m.student.candidates %}<tr class="{{ 'chosen' if c.chosen else '' }}"><td>{{ c.name }}</td><td class="num">{{ num(c.accuracy) }}</td><td class="num">{{ text(c.epochs_trained) }}</td><td class="num">{{ millions(c.params) }}</td><td class="num">{{ millions(c.macs) }}</td><td class="num">{{ "-" if c.int8_bytes is none else "%.0f"|format(c.int8_bytes / 1e3) }}</td><td class="num">{% if c.latency_by_group %}{% for g, ms in c.latency_by_group.items() %}{{ g }}: {{ num(ms, ".3g") }}{% if not loop.last %}, {% endif %}{% endfor %}{% else %}{{ num(c.latency_ms, ".3g") }}{% endif %}</td><td>{{ "yes" if c.chosen else "no" }}</td><td>{{ c.why or "" }}</td></tr>{% endfor %}
</table>
{% endif %}"""


def _points(m) -> list[dict]:
    """Every candidate student: val accuracy, INT8 weight bytes, latency on its profile."""
    return [dict(kind="student", name=c.name, accuracy=c.accuracy, size=c.int8_bytes, latency=c.latency_ms,
                 chosen=bool(c.chosen))
            for c in (m.student.candidates if m.student else [])]


def _lineage(m) -> tuple[str, str | None, str]:
    student = m.student or StudentRecord()
    unlabelled = student.unlabelled or {}
    extra = (f"; KD also on {unlabelled['images']} unlabelled images ({unlabelled.get('path')})"
             if unlabelled.get("images") else "")
    return ("student", student_name(m), f"distilled (select = {student.select or '-'}){extra}")


REPORT = StageReport(
    figures=DistillFigures, manifest=_manifest,
    fields={"student": StudentRecord | None, "precheck": PrecheckRecord | None},
    summary=_summary, html=_HTML, points=_points, lineage=_lineage, styles={"student": ("#4c72b0", "o")})
