"""What stage `quantize` adds to manifest.json and to the reports people read."""

from __future__ import annotations

from edgekiln.figures import num, text
from edgekiln.stages.quantize.records import Ladder, QuantizeRecord
from edgekiln.stages.report import StageReport
from edgekiln.system.records import dumped


def _manifest(result, checks: dict) -> dict:
    if result is None:
        return {"quantize": None}
    section = dumped(result.figures)
    if result.figures.ladder is not None:
        section["ladder"]["summary"] = ladder_sentence(result.figures.ladder)
    return {"quantize": section}


def ladder_sentence(ladder: Ladder | None) -> str | None:
    """The ladder in one sentence: "INT8 lost 6.10 points with minmax calibration; histogram
    calibration brought it to 97.20% (within budget)"; None when plain INT8 held."""
    steps = ladder.steps if ladder else []
    if len(steps) < 2:
        return None
    plain, parts = steps[0], []
    parts.append(f"plain INT8 ({plain.calibrator} calibration) scored {plain.accuracy:.2f}% on val: {plain.breach}")
    for step in steps[1:]:
        what = (f"{step.calibrator_used or step.calibrator} calibration" if step.rung == "calibration"
                else f"cross-layer equalization ({step.pairs} layer pairs)" if step.rung == "equalization"
                else f"bias correction ({step.layers_corrected} layers)" if step.rung == "bias_correction"
                else f"QAT with distillation ({step.epochs} epochs)" if step.rung == "qat"
                else f"{step.float_layers} layer(s) kept in float")
        verdict = "within budget" if step.breach is None else "still over"
        kept = "" if step.kept is not False else ", not kept (no better)"
        parts.append(f"{what} -> {step.accuracy:.2f}% ({verdict}{kept}, {step.seconds or 0:.0f} s)")
    return "; ".join(parts) + f". {ladder.stopped or ''}"


def _summary(m, console) -> None:
    quantize = m.quantize or QuantizeRecord()
    sentence = quantize.ladder.summary if quantize.ladder else None
    if sentence:
        console.print(f"quantize ladder: {sentence}", markup=False)
    if quantize.qat:
        qat = quantize.qat
        console.print(f"quantize: QAT {text(qat.epochs)} epochs -> {num(qat.accuracy)}% INT8-simulated "
                      f"(PTQ would give {num(quantize.ptq_accuracy)}%; {num(qat.float_accuracy)}% in float)")
    layers = quantize.layers
    if layers:
        worst = ", ".join(f"{r.layer} {num(r.sqnr_db, '.1f')} dB" + (" (kept in float)" if r.in_float else "")
                          for r in layers[:3])
        console.print(f"quantize: per-layer INT8 SQNR, lowest first: {worst} (all {len(layers)} in the manifest's "
                      "quantize.layers and report.html)", markup=False)
    mixed = quantize.mixed_precision
    if mixed:
        console.print(f"quantize: the plain INT8 simulation missed the budget ({text(mixed.breach)}); "
                      + (f"{text(mixed.outcome)}: {', '.join(mixed.float_layers)}" if mixed.applied
                         else text(mixed.why_not)))


_HTML = """{% if m.quantize %}
<h2 id="quantize">Quantization</h2>
<p>{{ text(m.quantize.mode) }}: {{ text(m.quantize.scheme) }}; calibrated on {{ text(m.quantize.calibration.count) if m.quantize.calibration else "?" }} images ({{ text(m.quantize.calibration.source) if m.quantize.calibration else "?" }}), calibrator {{ text(m.quantize.calibrator) }}{% if m.quantize.qat %}; QAT {{ text(m.quantize.qat.epochs) }} epochs → {{ num(m.quantize.qat.accuracy) }}% INT8-simulated (PTQ would give {{ num(m.quantize.ptq_accuracy) }}%){% endif %}</p>
{% if m.quantize.mixed_precision %}<p>the plain INT8 simulation missed the budget ({{ text(m.quantize.mixed_precision.breach) }}); {% if m.quantize.mixed_precision.applied %}{{ text(m.quantize.mixed_precision.outcome) }}: layers kept in float: {{ m.quantize.mixed_precision.float_layers|join(", ") }} (the artifacts of formats that can mix precisions start from them){% else %}{{ text(m.quantize.mixed_precision.why_not) }}{% endif %}</p>{% endif %}
{% if m.quantize.ladder and m.quantize.ladder.summary %}<p id="quantize-ladder">INT8 repair ladder: {{ m.quantize.ladder.summary }}</p>{% endif %}
{% if m.quantize.layers %}<h3 id="layer-sqnr">Per-layer INT8 SQNR</h3>
<p class="note">{{ text(m.quantize.layers_method) }}; lowest first. A low SQNR says a layer's own output is noisy in INT8, not what that costs the predictions: the layers kept in float{% if m.quantize.mixed_precision and m.quantize.mixed_precision.applied %} (marked){% endif %} are chosen by how far each alone, in INT8, moves the logits (the manifest's quantize.mixed_precision.ranking), and on the datasets measured (BENCHMARKS.md) the layers that moved them most were rarely the lowest here.</p>
{% set ranking = m.quantize.mixed_precision.ranking if m.quantize.mixed_precision else [] %}{% set rank = {} %}{% for r in ranking %}{% set _ = rank.update({(r if r is string else r.layer): loop.index}) %}{% endfor %}
<table id="layer-sqnr-table">
<tr><th>layer</th><th>SQNR dB</th>{% if ranking %}<th>effect on the logits: rank of {{ ranking|length }}</th>{% endif %}<th></th></tr>
{% for r in m.quantize.layers %}<tr><td>{{ r.layer }}{% if r.in_float %} <b>(kept in float)</b>{% endif %}</td><td class="num">{{ num(r.sqnr_db, ".1f") }}</td>{% if ranking %}<td class="num">{{ rank.get(r.layer, "-") }}</td>{% endif %}<td>{% if r.sqnr_db is not none %}<div style="background:{{ '#c0392b' if r.sqnr_db < 20 else '#e67e22' if r.sqnr_db < 30 else '#27ae60' }};height:0.8em;width:{{ [r.sqnr_db, 60]|min * 5 }}px"></div>{% endif %}</td></tr>
{% endfor %}</table>{% endif %}
{% endif %}"""


def _lineage(m) -> tuple[str, str | None, str]:
    quantize = m.quantize or QuantizeRecord()
    ladder = quantize.ladder.summary if quantize.ladder else None
    return ("quantization", None, f"{text(quantize.mode)}: {text(quantize.scheme)}"
            + (f"; INT8 repair ladder: {ladder}" if ladder else ""))


REPORT = StageReport(
    figures=QuantizeRecord, manifest=_manifest, fields={"quantize": QuantizeRecord | None},
    summary=_summary, html=_HTML, lineage=_lineage)
