"""What a person reads on the console after a run: the candidate, stage and artifact tables and the verdict."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from edgekiln.stages.progress import console
from edgekiln.targets.artifact import Artifact


def num(value, fmt: str = ".2f") -> str:
    """A figure, or "-" when there is none (also report.html's)."""
    return "-" if value is None else format(value, fmt)


def _interval(pair, fmt: str = ".1f") -> str:
    return "-" if not pair else f"[{format(pair[0], fmt)}, {format(pair[1], fmt)}]"


def _with_interval(value, pair) -> str:
    return "-" if value is None else f"{value:.2f} {_interval(pair)}".strip(" -")


def millions(value) -> str:
    """A count in millions, or "-" (also report.html's)."""
    return "-" if value is None else f"{value / 1e6:.2f}M"


def print_summary(manifest: dict, manifest_path: Path) -> None:
    """Teacher candidates, stage table, then one row per artifact, then the verdict."""
    teacher = manifest.get("teacher")
    if teacher and teacher.get("candidates"):
        candidates = Table(title=f"teacher candidates (select = {teacher.get('select', 'accuracy')})",
                           title_justify="left")
        for col in ("candidate", "accuracy %", "params", "MACs", "px", "host ms", "chosen", "why"):
            candidates.add_column(col, justify="left" if col in ("candidate", "chosen", "why") else "right")
        for c in teacher["candidates"]:
            candidates.add_row(c["name"], num(c["accuracy"], ".2f"), millions(c["params"]), millions(c["macs"]),
                               str(c.get("input_size", "-")), num(c.get("host_latency_ms"), ".2f"),
                               "yes" if c["chosen"] else "no", c.get("why", ""))
        console.print(candidates)
    student = manifest.get("student")
    if student and len(student.get("candidates") or []) > 1:
        table = Table(title=f"student candidates (select = {student['select']})", title_justify="left")
        for col in ("candidate", "val %", "epochs", "params", "MACs", "INT8 KB", "latency ms", "chosen", "why"):
            table.add_column(col, justify="left" if col in ("candidate", "chosen", "why") else "right")
        for c in student["candidates"]:
            table.add_row(c["name"], num(c.get("accuracy"), ".2f"), str(c.get("epochs_trained", "-")),
                          millions(c.get("params")), millions(c.get("macs")),
                          num(None if c.get("int8_bytes") is None else c["int8_bytes"] / 1e3, ".0f"),
                          num(c.get("latency_ms"), ".3g"), "yes" if c["chosen"] else "no", c.get("why", ""))
        console.print(table)
    splits = manifest.get("splits") or {}
    stages = Table(title=f"stages (decided on val; test held out: {splits.get('test') or 0} images)",
                   title_justify="left")
    for col in ("stage", "val %", "drop", "budget", "test % (95% CI)", "params", "MACs", "cached",
                "seconds", "gate"):
        stages.add_column(col, justify="left" if col in ("stage", "gate") else "right")
    for s in manifest["stages"]:
        stages.add_row(s["name"], f"{s['accuracy']:.2f}", num(s["drop"], "+.2f"), num(s["budget"], "g"),
                       _with_interval(s.get("test_accuracy"), s.get("test_accuracy_ci")),
                       millions(s["params"]), millions(s["macs"]), "yes" if s["cached"] else "no",
                       f"{s['seconds']:.1f}", "pass" if s["passed"] else "[red]FAIL")
    console.print(stages)
    chance = 100.0 / max(len(manifest.get("labels") or []), 1)
    for s in manifest["stages"]:
        if s["accuracy"] <= chance + 0.5 * (100 - chance) / 10:  # within a twentieth of chance
            console.print(f"[bold yellow]warning:[/] stage {s['name']} is at chance ({s['accuracy']:.2f}% with "
                          f"{len(manifest['labels'])} classes): it learned nothing; check the data and the "
                          "learning rates before trusting any later figure")
    prune = manifest.get("prune") or {}
    if len(prune.get("steps") or []) > 2:
        steps = Table(title=f"prune steps (importance = {prune.get('importance')})", title_justify="left")
        for col in ("step", "params", "MACs", "latency ms", "accuracy %", "note"):
            steps.add_column(col, justify="left" if col == "note" else "right")
        for p in prune["steps"]:
            latency = "-" if p["latency_ms"] is None else f"{p['latency_ms']:.3f} ({p['latency_source']})"
            steps.add_row(str(p["step"]), millions(p["params"]), millions(p["macs"]), latency,
                          f"{p['accuracy']:.2f}", p["note"])
        console.print(steps)
        console.print(f"prune: {prune['stopped']}")
    quantize = manifest.get("quantize") or {}
    if quantize.get("qat"):
        qat = quantize["qat"]
        console.print(f"quantize: QAT {qat['epochs']} epochs -> {qat['accuracy']:.2f}% INT8-simulated "
                      f"(PTQ would give {quantize['ptq_accuracy']:.2f}%; {qat['float_accuracy']:.2f}% in float)")
    if manifest["artifacts"]:
        artifacts = Table(title="artifacts", title_justify="left")
        numeric = ("size", "val %", "test % (95% CI)", "drop vs teacher", "p50 ms", "p90 ms", "peak MB")
        for col in ("target", "format", "encoding", "size", "val %", "test % (95% CI)", "drop vs teacher",
                    "measured in", "profile", "p50 ms", "p90 ms", "peak MB", "latency from", "gate"):
            artifacts.add_column(col, justify="right" if col in numeric else "left")
        for a in map(Artifact.from_dict, manifest["artifacts"]):
            lat = a.latency_ms or {}
            drop = "-" if a.test_drop is None else f"{a.test_drop:+.2f} {_interval(a.drop_ci, '+.2f')}"
            artifacts.add_row(
                a.target, a.format, a.encoding, f"{a.size_bytes / 1e3:.0f} KB", f"{a.accuracy:.2f}",
                _with_interval(a.test_accuracy, a.test_accuracy_ci), drop,
                a.accuracy_source, a.profile or "-",
                num(lat.get("p50"), ".3f") + (f" {_interval(lat['p50_interval'], '.3g')}" if lat.get("p50_interval") else ""),
                num(lat.get("p90"), ".3f"),
                num(a.peak_memory_mb, ".1f"), a.latency_source or "not measured",
                "pass" if a.passed else "[red]FAIL")
        console.print(artifacts)
        if splits.get("test"):
            console.print(f"note: release gates are judged on the {splits['test']} held-out test images "
                          f"(one image = {100 / splits['test']:.2f} points); intervals are 95%: Clopper-Pearson "
                          f"for accuracy, exact paired (McNemar) for the drop. Members: {splits.get('file')}.")
        elif splits:
            console.print(f"note: {splits.get('note')}")
        for a in map(Artifact.from_dict, manifest["artifacts"]):
            if a.accuracy_source == "proxy":
                console.print(f"note: {a.target} ({a.format}) accuracy is a torch-side proxy, not measured "
                              f"in its runtime ({a.accuracy_not_measured}).")
            choice = a.encoding_choice
            if choice:
                tried = ", ".join(f"{c['encoding']} {num(c['p50_ms'], '.3g')} ms {c['accuracy']:.2f}%"
                                  for c in choice["candidates"])
                console.print(f"note: {a.target}: {choice['chosen']} ships ({choice['why']}); tried {tried}")
            mixed = a.mixed_precision
            if mixed and mixed["applied"]:
                console.print(f"note: {a.target}: INT8 gave {a.int8_accuracy:.2f}% ({mixed['breach']}); "
                              f"{mixed['outcome']}: {', '.join(mixed['float_layers'])}")
            elif mixed:
                console.print(f"note: {a.target}: INT8 gave {a.int8_accuracy:.2f}% ({mixed['breach']}); "
                              f"{mixed['why_not']}")
            if a.quantization.get("activations"):
                console.print(f"note: {a.target}: activations {a.quantization['activations']}")
            for line in a.latency_notes + a.budgets_not_checked:
                console.print(f"note: {a.target}: {line}")
            if a.latency_source == "host" and (a.profile or "").startswith("host-"):
                console.print(f"note: {a.target}: latency is this machine's (no profile named), not a device's.")
    verdict = "[bold green]PASSED" if manifest["passed"] else "[bold red]FAILED"
    console.print(f"{verdict}[/] — manifest: {manifest_path}")
