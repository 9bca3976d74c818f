"""JUnit XML for CI systems: one testcase per gate of `run`, `check` and `diff`.

The layout is the one Jenkins, GitLab, GitHub's test reporters and Azure read: <testsuites>
holding one <testsuite> with counts, each <testcase classname name time> carrying a <failure
message type> for a failed gate, <skipped message> for a budget that was not checked (with
the reason; a <failure> where [release] require_checked fails the job on it) and <error
message> for a run that ended in an error instead of a verdict.
"""

from __future__ import annotations

import os
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from edgekiln.engine.manifest import write_text
from edgekiln.gates import gate_message, record_subject


@dataclass
class Case:
    classname: str  # e.g. "edgekiln.run.target.android-cpu"
    name: str  # the gate: its budget key or metric
    outcome: str = "passed"  # passed | failure | skipped | error
    message: str = ""


def run_cases(run) -> list[Case]:
    """A run's gates (`run`: its RunRecord): every stage and artifact gate it judged, the
    budgets it could not check, the stages and targets an earlier failure kept from being
    judged, its error, and each report that could not be written."""
    from edgekiln import stages

    cases = []
    unchecked = _unchecked_outcome(bool((run.config.release or {}).get("require_checked")))
    for record in run.gates:
        outcome = {"passed": "passed", "not_checked": unchecked}.get(record.status)
        if outcome is None:
            outcome = "passed" if record.passed else "failure"
        cases.append(Case(_classname("run", record_subject(record)), record.budget_key or "gate", outcome,
                          _unchecked_message(gate_message(record), outcome) if record.status == "not_checked"
                          else gate_message(record)))
    if run.version < 2:  # the budgets not checked were not yet gate records
        for artifact in run.artifacts:
            for line in artifact.budgets_not_checked:
                cases.append(Case(_classname("run", f"target {artifact.target}"), line.split(" = ")[0], "skipped",
                                  line))
    reached = {s.name for s in run.stages}
    why = run.error or "an earlier gate failed"
    planned = run.plan.stages  # None: a manifest from before plans, which ran every stage
    for stage in [s.name for s in stages.registered() if s.budgeted and (planned is None or s.name in planned)]:
        if stage not in reached:
            cases.append(Case(_classname("run", f"stage {stage}"), "budget.max_drop_total", "skipped",
                              f"stage {stage} was not run: {why}"))
    built = {a.target for a in run.artifacts}
    for target in run.config.targets:
        if target.name not in built:
            cases.append(Case(_classname("run", f"target {target.name}"), "artifact", "skipped",
                              f"target {target.name} was not built: {why}"))
    if run.error:
        cases.append(Case("edgekiln.run", "run", "error", run.error))
    for name, why in run.report_errors.items():
        cases.append(Case("edgekiln.run.report", name, "error", f"{name} could not be written: {why}"))
    return cases


def _unchecked_outcome(require_checked: bool) -> str:
    """A budget not checked is a skipped case, or a failure where [release] require_checked
    fails the job on it: the report then shows what failed it."""
    return "failure" if require_checked else "skipped"


def _unchecked_message(message: str, outcome: str) -> str:
    return f"release.require_checked = true: {message}" if outcome == "failure" else message


def check_cases(checks, run_passed: bool | None = None, require_checked: bool = False) -> list[Case]:
    """`edgekiln check`/`bench`: per artifact, its sha256 and re-measured accuracy (one case),
    each budget re-measured, and each budget that could not be checked."""
    cases = []
    unchecked = _unchecked_outcome(require_checked)
    if run_passed is False:
        cases.append(Case("edgekiln.check", "run passed", "failure", "the run itself did not pass its gates "
                          "(manifest: passed false)"))
    for c in checks:
        classname = _classname("check", f"target {c.target}")
        cases.append(Case(classname, "artifact", "failure" if c.problems else "passed",
                          "; ".join(c.problems) or f"{Path(c.path).name}: sha256 and accuracy as recorded"))
        for gate in c.budgets:
            cases.append(Case(classname, gate.budget_key, "passed" if gate.passed else "failure", gate.message()))
        for line in c.budgets_not_checked:
            cases.append(Case(classname, line.split(" = ")[0], unchecked, _unchecked_message(line, unchecked)))
    return cases


def diff_cases(diff) -> list[Case]:
    """`edgekiln diff`: one case per figure a threshold gates, skipped where the figures are
    not comparable; targets added or removed are skipped cases that say so."""
    cases = []
    for target in diff.targets:
        classname = _classname("diff", f"target {target.target}")
        if target.status == "incomplete":
            cases.append(Case(classname, "compared with base", "error",
                              f"target {target.target} cannot be judged: {target.why}"))
            continue
        if target.status != "compared":
            cases.append(Case(classname, "compared with base", "skipped",
                              f"target {target.target} {'is new in this run' if target.status == 'added' else 'was removed'}"))
            continue
        for change in target.changes:
            if not change.gated:
                continue  # shown, never gated (val accuracy, params, encoding...)
            outcome = "skipped" if not change.comparable else "failure" if change.regressed else "passed"
            cases.append(Case(classname, change.metric, outcome,
                              change.message(target.target)))
    return cases


def _classname(command: str, subject: str) -> str:
    kind, _, name = subject.partition(" ")
    return f"edgekiln.{command}.{kind}.{name}" if name else f"edgekiln.{command}.{subject}"


def write_junit(path: Path, suite: str, cases: list[Case], seconds: float = 0.0) -> Path:
    """Write `cases` as one <testsuite> named `suite`, atomically."""
    counts = {k: sum(c.outcome == k for c in cases) for k in ("failure", "skipped", "error")}
    root = ET.Element("testsuites", name="edgekiln", tests=str(len(cases)), failures=str(counts["failure"]),
                      errors=str(counts["error"]), skipped=str(counts["skipped"]), time=f"{seconds:.3f}")
    element = ET.SubElement(root, "testsuite", name=suite, tests=str(len(cases)), failures=str(counts["failure"]),
                            errors=str(counts["error"]), skipped=str(counts["skipped"]), time=f"{seconds:.3f}",
                            timestamp=time.strftime("%Y-%m-%dT%H:%M:%S"), hostname=os.uname().nodename)
    for case in cases:
        node = ET.SubElement(element, "testcase", classname=case.classname, name=case.name, time="0")
        if case.outcome == "failure":
            ET.SubElement(node, "failure", message=case.message, type="gate").text = case.message
        elif case.outcome == "error":
            ET.SubElement(node, "error", message=case.message, type="error").text = case.message
        elif case.outcome == "skipped":
            ET.SubElement(node, "skipped", message=case.message)
        else:
            ET.SubElement(node, "system-out").text = case.message
    ET.indent(root)
    return write_text(Path(path), ET.tostring(root, encoding="utf-8", xml_declaration=True).decode())
