"""What stage `teacher` adds to manifest.json and to the reports people read."""

from __future__ import annotations

from edgekiln.figures import millions, num, text
from edgekiln.stages.report import StageReport
from edgekiln.stages.teacher.records import TeacherFigures, TeacherRecord
from edgekiln.system.records import dumped


def _manifest(result, checks: dict) -> dict:
    if result is None:
        return {"teacher": None}
    return {"teacher": dumped(result.figures, accuracy=result.accuracy,
                              test_accuracy=None if result.test is None else result.test.accuracy)}


def _summary(m, console) -> None:
    from rich.table import Table

    teacher = m.teacher
    if not teacher or not teacher.candidates:
        return
    table = Table(title=f"teacher candidates (select = {teacher.select or 'accuracy'})", title_justify="left")
    for col in ("candidate", "accuracy %", "params", "MACs", "px", "host ms", "chosen", "why"):
        table.add_column(col, justify="left" if col in ("candidate", "chosen", "why") else "right")
    for c in teacher.candidates:
        table.add_row(text(c.name), num(c.accuracy, ".2f"), millions(c.params), millions(c.macs),
                      text(c.input_size), num(c.host_latency_ms, ".2f"), "yes" if c.chosen else "no",
                      c.why or "")
    console.print(table)


_HTML = """{% if m.teacher and m.teacher.candidates %}
<h2 id="teachers">Teacher candidates <span class="note">(select = {{ text(m.teacher.select) }})</span></h2>
<table id="teacher-table"><tr><th>candidate</th><th>val %</th><th>params</th><th>MACs</th><th>px</th><th>host ms</th><th>chosen</th><th>why</th></tr>
{% for c in m.teacher.candidates %}<tr class="{{ 'chosen' if c.chosen else '' }}"><td>{{ c.name }}</td><td class="num">{{ num(c.accuracy) }}</td><td class="num">{{ millions(c.params) }}</td><td class="num">{{ millions(c.macs) }}</td><td class="num">{{ text(c.input_size) }}</td><td class="num">{{ num(c.host_latency_ms) }}</td><td>{{ "yes" if c.chosen else "no" }}</td><td>{{ c.why or "" }}</td></tr>{% endfor %}
</table>
{% endif %}"""


def _points(m) -> list[dict]:
    """Every candidate: its val accuracy, its float size (4 bytes a parameter), its torch
    latency on this host."""
    return [dict(kind="teacher", name=c.name, accuracy=c.accuracy, size=None if c.params is None else 4 * c.params,
                 latency=c.host_latency_ms, chosen=bool(c.chosen))
            for c in (m.teacher.candidates if m.teacher else [])]


def _pct(value) -> str:
    return "-" if value is None else f"{value:.2f}%"


def _lineage(m) -> tuple[str, str | None, str]:
    teacher = m.teacher or TeacherRecord()
    chosen_from = ", ".join(f"`{c.name}`" for c in teacher.candidates)
    return ("teacher", teacher.name, f"val {_pct(teacher.accuracy)}, test "
            f"{_pct(teacher.test_accuracy)}, chosen from {chosen_from or '-'}")


REPORT = StageReport(
    figures=TeacherFigures, manifest=_manifest, fields={"teacher": TeacherRecord | None},
    summary=_summary, html=_HTML, points=_points, lineage=_lineage, styles={"teacher": ("#8172b3", "s")})
