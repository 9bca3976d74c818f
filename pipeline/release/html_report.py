"""report.html: the one page a reviewer opens from a CI artifact. Self-contained (styles and
plots inline, nothing fetched), verdict first, then the comparison with the base release
when there is one, artifacts, stages, candidates, plots, and what was not measured."""

from __future__ import annotations

import base64
import functools
import os
from pathlib import Path

from edgekiln import stages as registry
from edgekiln import time_budget
from edgekiln.engine.manifest import write_text
from edgekiln.figures import kilobytes, millions, num, text, verdict
from edgekiln.gates import gate_message
from edgekiln.gates import verdict as run_verdict
from edgekiln.release.model_card import not_measured
from edgekiln.release.lineage import lineage
from edgekiln.release.regression import format_figure

# The captions of the plots the page inlines (plots.draw's names).
CAPTIONS = {"report": "accuracy after each stage and of each artifact (held-out test, 95% intervals), and each "
                      "artifact's p50 latency against its budget",
            "tradeoff": "val accuracy against size and against latency of every candidate the run evaluated: "
                        "teachers, students, prune steps, encodings; shipped artifacts are stars"}


def _interval(pair, fmt: str = ".1f") -> str:
    """After a figure: its interval, or nothing."""
    return "" if not pair else f"[{format(pair[0], fmt)}, {format(pair[1], fmt)}]"


@functools.lru_cache(maxsize=2)
def _environment(strict: bool):
    """Tests render with StrictUndefined (EDGEKILN_STRICT_TEMPLATES=1), so a figure read
    without a guard fails the suite; a user's run gets the lenient default."""
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("edgekiln.release", "templates"),
                              autoescape=True,
                              undefined=jinja2.StrictUndefined if strict else jinja2.ChainableUndefined)


def _template(strict: bool):
    """The page's template."""
    return _environment(strict).get_template("report.html.j2")


def _stage_sections(strict: bool, **context) -> list:
    """Each registered stage's part of the page (its candidates, steps...), in stage order."""
    from markupsafe import Markup

    return [Markup(_fragment(strict, stage.reporting.html).render(**context))
            for stage in registry.registered() if stage.reporting.html]


@functools.lru_cache(maxsize=32)
def _fragment(strict: bool, source: str):
    """A stage's fragment, compiled once (compiling is most of a page's rendering time)."""
    return _environment(strict).from_string(source)


def render(run, images: dict[str, Path], diff=None, title: str | None = None) -> str:
    """The page of a run (its RunRecord) as text. `images`: plots.draw's name -> PNG path
    (missing files are left out); `diff`: a RunDiff against the base release, shown after the
    verdict. An absent figure is shown as "-"."""
    failed = [gate_message(g) for g in run.gates if g.passed is False or g.status == "failed"]
    inline = {name: (CAPTIONS[name], base64.b64encode(path.read_bytes()).decode())
              for name, path in images.items() if path is not None and path.is_file()}
    strict = os.environ.get("EDGEKILN_STRICT_TEMPLATES") == "1"
    helpers = dict(num=num, interval=_interval, millions=millions, kb=kilobytes, text=text, verdict=verdict,
                   fmt=format_figure, signed=lambda value: format_figure(value, signed=True),
                   time_budget_line=time_budget.describe, gate_message=gate_message)
    return _template(strict).render(
        m=run, title=title or run.config_name or "run", diff=diff, images=inline, failed_gates=failed,
        run_verdict=run.verdict or run_verdict(run.passed, len(run.unchecked)),
        not_measured=not_measured(run), lineage=lineage(run), stage_sections=_stage_sections(strict, m=run, **helpers),
        **helpers)


def write_html(path: Path, run, images: dict[str, Path], diff=None, title: str | None = None) -> Path:
    """Write report.html atomically."""
    return write_text(path, render(run, images, diff, title))
