"""What stage `given` (the given model, [model]) adds to manifest.json and to the reports."""

from __future__ import annotations

from edgekiln.stages.report import Maybe, StageReport


def _manifest(result, checks: dict) -> dict:
    if result is None:
        return {"model": None}
    keep = ("name", "arch", "checkpoint", "checkpoint_sha256", "input_size", "mean", "std", "preprocessing_from",
            "params", "macs", "fine_tuned")
    return {"model": {**{k: result.metrics.get(k) for k in keep}, "accuracy": result.accuracy,
                      "test_accuracy": result.metrics.get("test_accuracy")}}


def _pct(value) -> str:
    return "-" if value is None else f"{value:.2f}%"


def _summary(m: dict, console) -> None:
    model = m["model"]
    if model:
        sha = (model.get("checkpoint_sha256") or "")[:12]
        console.print(f"the given model: {model['name']} at {model['input_size']} px, val {_pct(model['accuracy'])}, "
                      f"test {_pct(model['test_accuracy'])}" + (f", checkpoint sha256 {sha}..." if sha else "")
                      + ("; fine-tuned here" if model.get("fine_tuned") else "; used as given"), markup=False)
        check = m.get("preprocessing_check") or {}
        if check.get("configured"):
            console.print(f"  fed at {model['input_size']} px with {check['configured']['normalization']} "
                          f"({', '.join(f'{k} from {v}' for k, v in (model.get('preprocessing_from') or {}).items())}); "
                          f"none of {len(check.get('screened') or {})} alternatives scored clearly better on val",
                          markup=False)


def _lineage(m: dict):
    model = m["model"]
    if not model:
        return None
    sha = model.get("checkpoint_sha256")
    return ("given model", model.get("name"), f"val {_pct(model.get('accuracy'))}, test "
            f"{_pct(model.get('test_accuracy'))}" + (f", checkpoint sha256 `{sha[:16]}`" if sha else "")
            + (", fine-tuned here" if model.get("fine_tuned") else ", as given"))


_HTML = """{% if m.model %}
<h2 id="given-model">The given model</h2>
<p>{{ m.model.name }} at {{ text(m.model.input_size) }} px: val {{ num(m.model.accuracy) }} %, test {{ num(m.model.test_accuracy) }} %{% if m.model.checkpoint_sha256 %}, checkpoint sha256 <code>{{ m.model.checkpoint_sha256[:16] }}</code>{% endif %}; {{ "fine-tuned here" if m.model.fine_tuned else "used as given" }}. Every drop is measured against it; pruning recovery and QAT distil from it.</p>
{% endif %}"""


REPORT = StageReport(
    manifest=_manifest, fields={"model": dict | None},
    view={"model": Maybe({"name": None, "arch": None, "checkpoint": None, "checkpoint_sha256": None,
                          "input_size": None, "accuracy": None, "test_accuracy": None, "params": None,
                          "macs": None, "fine_tuned": None})},
    summary=_summary, html=_HTML, lineage=_lineage)
