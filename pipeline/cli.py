"""`edgekiln` command line.

Exit codes: 0 every gate passed, 1 a gate failed, 2 bad config or input, 3 an internal
error (a bug: never reported as a failed gate, so release scripts can tell them apart).
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Optional

import typer

EXIT_OK, EXIT_GATE_FAILED, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Compress an image classifier into gated mobile artifacts.")


@app.callback()
def _root() -> None:
    """edgekiln: teacher -> distill -> prune -> quantize -> export, gated on accuracy."""


def _quiet_converters() -> None:
    # The converters print pages of progress of their own; ours is enough.
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore")
    import logging

    for name in ("coremltools", "torch", "onnxruntime", "root"):
        logging.getLogger(name).setLevel(logging.ERROR)


@app.command()
def run(
    config: Path = typer.Argument(..., help="pipeline TOML file"),
    out: Optional[Path] = typer.Option(None, "--out", help="output directory [default: out/<config name>]"),
    cache_dir: Optional[Path] = typer.Option(
        None, "--cache-dir", envvar="EDGEKILN_CACHE_DIR", help="stage cache [default: .edgekiln-cache]"),
    verbose: bool = typer.Option(False, "--verbose", help="keep the converters' own output"),
) -> None:
    """Run the pipeline CONFIG describes; artifacts and manifest.json go to --out."""
    if not verbose:
        _quiet_converters()
    from edgekiln.config import ConfigError, load_config
    from edgekiln.stages.errors import InputError
    from edgekiln.stages.progress import console
    from edgekiln.targets.errors import ConversionError

    try:
        cfg = load_config(config)
    except ConfigError as e:
        console.print(f"[bold red]config error:[/] {e}")
        raise typer.Exit(EXIT_BAD_INPUT)
    out = out or Path("out") / config.stem
    cache_dir = cache_dir or Path(".edgekiln-cache")

    from edgekiln import report
    from edgekiln.runner import run_pipeline

    try:
        outcome = run_pipeline(cfg, out, cache_dir, config.read_text())
    except (InputError, ConversionError) as e:
        console.print(f"[bold red]input error:[/] {e}")
        console.print(f"(manifest with the error: {out / 'manifest.json'})")
        raise typer.Exit(EXIT_BAD_INPUT)
    except Exception:
        console.print_exception()
        console.print(f"[bold red]internal error[/] (a bug in edgekiln; manifest: {out / 'manifest.json'})")
        raise typer.Exit(EXIT_INTERNAL)
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    report.plot(manifest, out / "report.png")
    report.print_summary(manifest, manifest_path)
    for gate in outcome.gates:
        if not gate.passed:
            console.print(f"[bold red]{gate.message()}")
    raise typer.Exit(EXIT_OK if outcome.passed else EXIT_GATE_FAILED)


@app.command()
def check(
    out_dir: Path = typer.Argument(..., help="output directory of `edgekiln run`"),
    accuracy: bool = typer.Option(True, "--accuracy/--no-accuracy",
                                  help="re-run each artifact over the val split"),
) -> None:
    """Verify a finished run: sha256 of every artifact against the manifest, accuracy
    re-measured in each runtime, host latency re-timed. Exit 0 / 1 / 2 as `run`."""
    _quiet_converters()
    from rich.table import Table

    from edgekiln.check import check_run
    from edgekiln.stages.errors import InputError
    from edgekiln.stages.progress import console

    try:
        manifest, checks = check_run(out_dir, measure_accuracy=accuracy)
    except InputError as e:
        console.print(f"[bold red]input error:[/] {e}")
        raise typer.Exit(EXIT_BAD_INPUT)
    table = Table(title=f"check {out_dir}", title_justify="left")
    for col in ("target", "artifact", "sha256", "accuracy %", "manifest %", "host p50 ms", "result"):
        table.add_column(col)
    recorded = {a["target"]: a for a in manifest["artifacts"]}
    for c in checks:
        table.add_row(c.target, c.path, "ok" if c.sha256_matches else "[red]MISMATCH",
                      "-" if c.accuracy is None else f"{c.accuracy:.2f}", f"{recorded[c.target]['accuracy']:.2f}",
                      "-" if c.latency_p50 is None else f"{c.latency_p50:.3f}",
                      "pass" if c.passed else "[red]FAIL")
    console.print(table)
    for c in checks:
        for line in c.problems:
            console.print(f"[bold red]{c.target}:[/] {line}")
        for line in c.notes:
            console.print(f"{c.target}: {line}")
    if not manifest.get("passed", False):
        console.print("[bold red]the run itself did not pass its gates[/] (manifest: passed false)")
    ok = manifest.get("passed", False) and all(c.passed for c in checks)
    console.print("[bold green]PASSED" if ok else "[bold red]FAILED")
    raise typer.Exit(EXIT_OK if ok else EXIT_GATE_FAILED)


def main() -> None:
    sys.exit(app())
