"""The commands that start from what the user has: `compress` (a trained model: quantize and
export it, pruned first if asked, in one command) and `init` (a commented starter config for
an image folder); and running a config and reporting its outcome, which `run` shares."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgekiln.errors import EXIT_GATE_FAILED, EXIT_OK
from edgekiln.interfaces.exits import exit_codes, report_failures
from edgekiln.interfaces.quiet import quiet_converters
from edgekiln.progress import console

_CACHE_OPTION = typer.Option(None, "--cache-dir", envvar="EDGEKILN_CACHE_DIR",
                             help="stage cache [default: .edgekiln-cache]")


def run_and_report(config, out: Path, junit, compare, cache_dir, force: bool, keep_config: bool = False,
                   max_minutes: float | None = None, base: Path | None = None) -> None:
    """Run `config` (a file, or TOML text), print its summary and exit with its code."""
    from edgekiln.interfaces import api
    from edgekiln.release import summary

    result = api.run(config, out, cache_dir, junit=junit, compare=compare, force=force,
                     keep_config=keep_config, max_minutes=max_minutes, base=base)
    if not result.published:
        raise typer.Exit(report_failures(
            result.report_failures, f"nothing was published: {out} keeps what it held, since even the manifest "
            "saying so could not be written; every stage is cached, so a re-run with room for the outputs is warm"))
    if result.record is not None:
        summary.print_summary(result.record, result.paths["manifest"])
    else:  # the run's manifest does not fit its own schema (a bug): its reports say why, the verdict stands
        console.print(f"{result.verdict} — manifest: {result.paths['manifest']} (no summary: "
                      f"{result.report_failures[0].message()})", markup=False)
    for gate in result.failed_gates:
        console.print(f"[bold red]{gate.message()}")
    console.print("reports: " + ", ".join(str(result.paths[k]) for k in ("report_html", "model_card", "junit")
                                          if k in result.paths))
    if result.report_failures:
        refused = any(not f.bug for f in result.report_failures)
        raise typer.Exit(report_failures(
            result.report_failures, ("the run is not whole, so its manifest says passed: false" if refused else
                                     f"the run's gates {'passed' if result.passed else 'failed'}") +
            "; its artifacts and manifest.json are written, and the manifest names the missing reports under "
            "report_errors"))
    raise typer.Exit(EXIT_OK if result.passed else EXIT_GATE_FAILED)


# The config keys compress writes, as the flags the user typed: an error names what they gave.
FLAG_OF_KEY = {"model.checkpoint": "--weights", "model.arch": "--arch", "data.test_path": "--test-data",
               "data.path": "--data", "data.classes": "--classes", "model.image_size": "--image-size",
               "model.mean": "--mean", "model.std": "--std", "budget.max_drop_total": "--budget",
               "prune.macs_ratio": "--prune"}


def in_flags(message: str) -> str:
    """A run's error about the config compress wrote, in the flags the user gave: "--weights
    (model.checkpoint)" for "model.checkpoint (line 9)" (the line of a file they never wrote)."""
    import re

    message = re.sub(r" \(line \d+\)", "", message)
    for key, flag in FLAG_OF_KEY.items():
        message = re.sub(rf"(?<![\w.\[]){re.escape(key)}(?![\w])", f"{flag} ({key})", message)
    return message


def compress(
    arch: Optional[str] = typer.Option(None, "--arch", help="timm architecture of your model, e.g. resnet18"),
    weights: Optional[Path] = typer.Option(None, "--weights", help="its trained weights: .safetensors, or .pt/.pth "
                                           "(read with weights_only)"),
    model: Optional[str] = typer.Option(None, "--model", help="instead of --arch/--weights: a transformers image "
                                        "classifier, hf:<local dir or hub id>"),
    data: Path = typer.Option(..., "--data", help="images to calibrate and test on: class sub-folders (named as "
                              "its classes, sorted as its outputs) or MNIST-style IDX files"),
    test_data: Optional[Path] = typer.Option(None, "--test-data", help="held-out test images, never trained on, "
                                             "laid out as --data [default: 20% of --data, carved at random]"),
    target: list[str] = typer.Option(..., "--target", help="a latency profile to build for (repeat); see "
                                     "`edgekiln profile ls`"),
    budget: float = typer.Option(1.0, "--budget", min=0.0, max=100.0, help="test accuracy points an artifact may "
                                 "lose against your model"),
    prune: Optional[float] = typer.Option(None, "--prune", min=0.05, max=1.0, help="prune first to this share of "
                                          "its MACs (e.g. 0.7), recovering by self-distillation"),
    image_size: Optional[int] = typer.Option(None, "--image-size", min=16, max=1024, help="the size it was trained "
                                             "at [default: the checkpoint's metadata, else timm's for the "
                                             "architecture, or the image processor's]"),
    mean: Optional[str] = typer.Option(None, "--mean", help="the mean it was trained with, on pixels / 255: one "
                                       "value or three (R,G,B) [default: the checkpoint's metadata, else timm's "
                                       "for the architecture]"),
    std: Optional[str] = typer.Option(None, "--std", help="the std it was trained with, as --mean"),
    check_preprocessing: bool = typer.Option(True, "--check-preprocessing/--no-check-preprocessing",
                                             help="before any stage, score the model under the usual alternatives "
                                             "of size and mean/std, and refuse when one is clearly better"),
    classes: Optional[str] = typer.Option(None, "--classes", help="the class names in the order of the model's "
                                          "outputs, comma-separated, or a file with one per line [default: the "
                                          "model's own labels where it records them, else the class folders' "
                                          "sorted names]"),
    allow_estimate: bool = typer.Option(False, "--allow-estimate", help="estimate latency where a profile's device "
                                        "cannot be reached"),
    out: Path = typer.Option(Path("out/compress"), "--out", help="output directory (config.toml is written there)"),
    cache_dir: Optional[Path] = _CACHE_OPTION,
    junit: Optional[Path] = typer.Option(None, "--junit", help="also write the gates as JUnit XML to this file"),
    force: bool = typer.Option(False, "--force", help="write into a non-empty --out that is not an edgekiln output"),
) -> None:
    """Compress the classifier you trained: INT8 artifacts for each --target, every one gated
    on the held-out test split against your model's own accuracy and on its profile's
    budgets; no teacher, no student is trained. The config it builds is written to
    OUT/config.toml: `edgekiln run OUT/config.toml` reproduces the run, and you can edit it.
    Exit codes as `run`."""
    quiet_converters()
    from edgekiln.interfaces.configs import (class_names, compress_config, model_preprocessing, recorded_classes,
                                             relative_to, to_toml)

    with exit_codes():
        fed = model_preprocessing(arch, weights, model, image_size, mean, std)
        console.print(fed.summary(), markup=False)
        names = class_names(classes) if classes is not None else recorded_classes(weights, data)
        config = compress_config(arch=arch, weights=weights, model=model, data=data, test_data=test_data,
                                 targets=target, budget=budget, prune=prune, allow_estimate=allow_estimate,
                                 image_size=fed.image_size, mean=fed.mean, std=fed.std,
                                 check_preprocessing=check_preprocessing, classes=names)
        # Its paths relative to OUT, where it is kept: committed with the data, it runs in any checkout.
        config = relative_to(config, out)
        text = to_toml(config, "# written by `edgekiln compress`; run it again with `edgekiln run config.toml`;\n"
                       "# paths are relative to this file\n")
        try:
            run_and_report(text, out, junit, None, cache_dir, force, keep_config=True, base=out.resolve())
        except Exception as e:
            from edgekiln.engine.config import ConfigError
            from edgekiln.errors import InputError

            if isinstance(e, (InputError, ConfigError)) and e.args:
                e.args = (in_flags(str(e.args[0])),) + e.args[1:]
            raise


def init(
    data: Path = typer.Argument(..., help="a folder of class sub-folders of images (or of IDX files)"),
    out: Path = typer.Option(Path("edgekiln.toml"), "--out", help="the config file to write"),
    force: bool = typer.Option(False, "--force", help="overwrite --out if it exists"),
) -> None:
    """Write a commented starter config for the whole DAG (teacher, student, prune, quantize,
    export) on DATA: its classes counted, an image size suggested, the shipped profiles listed."""
    from edgekiln.engine.manifest import write_text
    from edgekiln.interfaces.configs import starter_config

    with exit_codes():
        if out.exists() and not force:
            from edgekiln.errors import InputError

            raise InputError(f"--out {out} exists: give another path, or --force to overwrite it")
        write_text(out, starter_config(data))
    console.print(f"wrote {out}: check it with `edgekiln validate {out}`, run it with `edgekiln run {out}`")
