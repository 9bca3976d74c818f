"""What stage `given` (the given model, [model]) adds to manifest.json and to the reports."""

from __future__ import annotations

from edgekiln.stages.given.records import GivenModelFigures, GivenModelRecord, PreprocessingCheck
from edgekiln.stages.report import StageReport
from edgekiln.system.records import dumped


def _manifest(result, checks: dict) -> dict:
    if result is None:
        return {"model": None}
    return {"model": dumped(result.figures, params=result.params, macs=result.macs, accuracy=result.accuracy,
                            test_accuracy=None if result.test is None else result.test.accuracy)}


def _pct(value) -> str:
    return "-" if value is None else f"{value:.2f}%"


def _summary(m, console) -> None:
    model = m.model
    if model:
        sha = (model.checkpoint_sha256 or "")[:12]
        console.print(f"the given model: {model.name} at {model.input_size} px, val {_pct(model.accuracy)}, "
                      f"test {_pct(model.test_accuracy)}" + (f", checkpoint sha256 {sha}..." if sha else "")
                      + ("; fine-tuned here" if model.fine_tuned else "; used as given"), markup=False)
        check = m.preprocessing_check
        if check and check.configured:
            console.print(f"  fed at {model.input_size} px with {check.configured.get('normalization')} "
                          f"({', '.join(f'{k} from {v}' for k, v in (model.preprocessing_from or {}).items())}); "
                          f"none of {len(check.screened or {})} alternatives scored clearly better on val",
                          markup=False)


def _lineage(m):
    model = m.model
    if not model:
        return None
    sha = model.checkpoint_sha256
    return ("given model", model.name, f"val {_pct(model.accuracy)}, test "
            f"{_pct(model.test_accuracy)}" + (f", checkpoint sha256 `{sha[:16]}`" if sha else "")
            + (", fine-tuned here" if model.fine_tuned else ", as given"))


_HTML = """{% if m.model %}
<h2 id="given-model">The given model</h2>
<p>{{ m.model.name }} at {{ text(m.model.input_size) }} px: val {{ num(m.model.accuracy) }} %, test {{ num(m.model.test_accuracy) }} %{% if m.model.checkpoint_sha256 %}, checkpoint sha256 <code>{{ m.model.checkpoint_sha256[:16] }}</code>{% endif %}; {{ "fine-tuned here" if m.model.fine_tuned else "used as given" }}. Every drop is measured against it; pruning recovery and QAT distil from it.</p>
{% endif %}"""


REPORT = StageReport(
    figures=GivenModelFigures, manifest=_manifest,
    fields={"model": GivenModelRecord | None, "preprocessing_check": PreprocessingCheck | None},
    summary=_summary, html=_HTML, lineage=_lineage)
