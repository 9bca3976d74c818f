"""report.html: the one page a reviewer opens from a CI artifact. Self-contained (styles and
plots inline, nothing fetched), verdict first, then the comparison with the base release
when there is one, artifacts, stages, candidates, plots, and what was not measured."""

from __future__ import annotations

import base64
from pathlib import Path

from edgekiln.gates import gate_from_dict
from edgekiln.manifest import write_text
from edgekiln.model_card import not_measured, student_name
from edgekiln.regression import format_figure
from edgekiln.summary import millions, num

# The captions of the plots the page inlines (plots.draw's names).
CAPTIONS = {"report": "accuracy after each stage and of each artifact (held-out test, 95% intervals), and each "
                      "artifact's p50 latency against its budget",
            "tradeoff": "val accuracy against size and against latency of every candidate the run evaluated: "
                        "teachers, students, prune steps, encodings; shipped artifacts are stars"}


def _interval(pair, fmt: str = ".1f") -> str:
    """After a figure: its interval, or nothing."""
    return "" if not pair else f"[{format(pair[0], fmt)}, {format(pair[1], fmt)}]"


def render(manifest: dict, images: dict[str, Path], diff=None, title: str | None = None) -> str:
    """The page as text. `images`: plots.draw's name -> PNG path (missing files are left out);
    `diff`: a RunDiff against the base release, shown after the verdict."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("edgekiln", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.ChainableUndefined)
    artifacts = []
    for record in manifest.get("artifacts") or []:
        gates = [gate_from_dict(g) for g in record.get("gates") or []]
        artifacts.append({**record, "gate_messages": [{"passed": g.passed, "message": g.message()} for g in gates],
                          "budgets_not_checked": record.get("budgets_not_checked") or [],
                          "latency_notes": record.get("latency_notes") or []})
    failed = [gate_from_dict(g).message() for g in manifest.get("gates") or [] if not g.get("passed")]
    inline = {name: (CAPTIONS[name], base64.b64encode(path.read_bytes()).decode())
              for name, path in images.items() if path is not None and path.is_file()}
    return env.get_template("report.html.j2").render(
        m={**manifest, "artifacts": artifacts}, title=title or manifest.get("config_name") or "run",
        diff=diff, images=inline, failed_gates=failed, not_measured=not_measured(manifest),
        student_name=student_name(manifest), num=num, interval=_interval, millions=millions, fmt=format_figure,
        signed=lambda value: format_figure(value, signed=True))


def write_html(path: Path, manifest: dict, images: dict[str, Path], diff=None, title: str | None = None) -> Path:
    """Write report.html atomically."""
    return write_text(path, render(manifest, images, diff, title))
