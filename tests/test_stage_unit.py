"""A stage is one unit: registered from this file alone, it runs in the DAG, is cached and
gated like the others, and shows in the manifest and report.html; nothing else is edited."""

import json
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from edgekiln import stages
from edgekiln.stages import Stage, StageReport
from edgekiln.stages.result import StageResult
from edgekiln.system.records import Record, dumped
from edgekiln.training.evaluation import Grading


class AuditConfig(BaseModel):
    """`[audit]`: how many of the published artifacts the audit must see."""

    model_config = ConfigDict(extra="forbid")

    min_artifacts: int = 1


def audit(data, config, workdir: Path, *, previous: StageResult, reference: StageResult) -> StageResult:
    """Counts the artifacts of the stage before it and agrees with its accuracy (a stage with no
    model of its own: it grades itself with the artifacts' own test predictions)."""
    artifacts = previous.artifacts  # typed Artifacts, graded on test
    assert len(artifacts) >= config.audit.min_artifacts and reference.accuracy > 0
    (workdir / "audit.txt").write_text(f"{len(artifacts)} artifacts\n")
    best = max(artifacts, key=lambda a: a.accuracy)
    result = StageResult(accuracy=best.accuracy, figures=AuditRecord(artifacts_seen=len(artifacts), best=best.target),
                         files=["audit.txt"])
    result.grader = lambda test_x, test_y: [Grading(best.test_accuracy, best.test_top1)]
    return result


class AuditRecord(Record):
    """manifest.json's `audit`: what the reports read of it, typed."""

    artifacts_seen: int | None = None
    best: str | None = None


AUDIT = Stage(
    name="audit", order=60, run=audit, section="audit", schema=AuditConfig, default=AuditConfig(), budgeted=True,
    report=StageReport(
        figures=AuditRecord,
        manifest=lambda result, checks: {"audit": None if result is None else dumped(result.figures)},
        fields={"audit": AuditRecord | None},
        summary=lambda m, console: console.print(f"audit: {m.audit.artifacts_seen} artifacts seen")
        if m.audit else None,
        html='{% if m.audit %}<h2 id="audit">Audit</h2><p>{{ m.audit.artifacts_seen }} artifacts seen, '
             'best {{ m.audit.best }}</p>{% endif %}'))


@pytest.fixture
def registered_audit():
    stages.register(AUDIT)
    try:
        yield AUDIT
    finally:
        stages.unregister(AUDIT.name)


def test_a_stage_registered_from_a_test_runs_caches_gates_and_is_reported(run, registered_audit):
    from tiny_pipeline import invoke, write_config

    root, _, first = run
    work = root / "audit"
    work.mkdir()
    config = write_config(work, extra="\n[audit]\nmin_artifacts = 3\n")
    result = invoke(config, work / "out", root / "cache")
    assert result.exit_code == 0, result.output
    manifest = json.loads((work / "out" / "manifest.json").read_text())
    records = {s["name"]: s for s in manifest["stages"]}
    assert list(records) == ["teacher", "distill", "prune", "quantize", "export", "audit"]
    assert all(records[name]["cached"] for name in ("teacher", "distill", "prune", "quantize", "export"))
    assert records["audit"]["cached"] is False and records["audit"]["test_accuracy"] is not None
    assert manifest["audit"] == {"artifacts_seen": 3, "best": manifest["audit"]["best"]}
    assert manifest["config"]["audit"] == {"min_artifacts": 3}
    assert [g["budget_key"] for g in manifest["gates"] if (g["subject_type"], g["subject"]) == ("stage", "audit")] == ["budget.max_drop_total"]
    html = (work / "out" / "report.html").read_text()
    assert '<h2 id="audit">Audit</h2><p>3 artifacts seen' in html
    assert "audit: 3 artifacts seen" in " ".join(result.output.split())
    again = invoke(config, work / "out", root / "cache")
    assert again.exit_code == 0, again.output
    rerun = json.loads((work / "out" / "manifest.json").read_text())
    assert all(s["cached"] for s in rerun["stages"])


def test_a_stage_budget_and_section_come_from_the_registry(registered_audit, tmp_path):
    from tiny_pipeline import write_config

    from edgekiln.engine.config import ConfigError, load_config

    config = write_config(tmp_path, extra="\n[budget.max_drop]\naudit = 1.5\n[audit]\nmin_artifacts = 2\n")
    cfg = load_config(config)
    assert cfg.budget.max_drop.audit == 1.5 and cfg.audit.min_artifacts == 2
    stages.unregister(AUDIT.name)
    with pytest.raises(ConfigError, match=r"budget.max_drop.audit = 1.5 \(line \d+\): unknown key\n"
                                          r"  audit \(line \d+\): unknown key"):
        load_config(config)


def test_a_cached_result_reads_back_as_its_stages_figures_and_writes_the_same_manifest_section(tmp_path):
    """The cache stores a stage's figures as it set them and reads them back as its record
    type: a cached stage's manifest section is the fresh one's, not one with every figure null."""
    from edgekiln.stages.quantize.records import Ladder, LadderStep, QuantizeRecord
    from edgekiln.stages.quantize.report import REPORT
    from edgekiln.stages.result import load_result, save_result

    figures = QuantizeRecord(mode="ptq", ptq_accuracy=90.0, ladder=Ladder(
        rungs=["plain", "equalization"], steps=[LadderStep(rung="plain", accuracy=90.0, breach="1 point"),
                                                LadderStep(rung="equalization", accuracy=95.0, pairs=3, kept=True)],
        stopped="within budget at rung equalization"))
    fresh = StageResult(accuracy=95.0, figures=figures)
    save_result(fresh, tmp_path)
    cached = load_result(tmp_path, QuantizeRecord)
    assert isinstance(cached.figures, QuantizeRecord) and cached.figures.ladder.steps[1].pairs == 3
    assert REPORT.manifest(cached, {}) == REPORT.manifest(fresh, {})
    assert "qat" not in REPORT.manifest(cached, {})["quantize"]  # never set: absent, as when fresh
