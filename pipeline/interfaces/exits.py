"""How the command line ends: every command's errors mapped to exit codes in one place, the
verdict, and the reports that could not be written.

Exit codes: 0 every gate passed, 1 a gate failed, 2 bad config or input, 3 an internal
error (a bug: never reported as a failed gate, so release scripts can tell them apart),
130/143 interrupted (SIGINT/SIGTERM).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import typer
from rich.markup import escape

from edgekiln.errors import EXIT_BAD_INPUT, EXIT_GATE_FAILED, EXIT_INTERNAL, EXIT_OK
from edgekiln.progress import console, errors


@contextlib.contextmanager
def exit_codes() -> Iterator[None]:
    """Every command's errors as exit codes: 2 for the config or the input (a file, a device,
    a converter refusing the model), 1 for training that diverged (the run failed on its own
    terms, as a gate would), the signal's for an interruption, 3 for anything else (a bug)."""
    from edgekiln.engine.config import ConfigError
    from edgekiln.engine.manifest import PublishError
    from edgekiln.errors import InputError, TrainingDiverged
    from edgekiln.targets.errors import ConversionError
    from edgekiln.system.disk import describe, full_disk_error
    from edgekiln.system.interrupts import Interrupted
    from edgekiln.targets.profiles import ProfileError

    def manifest_note(error: BaseException, extra: str = "") -> None:  # the manifest the run wrote, if any
        if getattr(error, "manifest_path", None) is not None:
            errors.print(f"(manifest with the error: {error.manifest_path}{extra})")

    try:
        yield
    except typer.Exit:
        raise
    except Interrupted as e:
        stage = getattr(e, "stage", None)
        errors.print(f"[bold red]interrupted[/] by {e.signal}" + (f" during stage {stage}" if stage else "") +
                      ": the stages finished before it are cached and the one under way keeps its epoch "
                      "checkpoints, so a re-run resumes there")
        if getattr(e, "kept_previous", None) is not None:
            errors.print(f"{e.kept_previous} keeps the previous run whole: this one did not finish, so it published "
                         "nothing", markup=False)
        manifest_note(e)
        raise typer.Exit(e.exit_code)
    except ConfigError as e:
        errors.print(f"[bold red]config error:[/] {escape(str(e))}", soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT)
    except (InputError, ConversionError, PublishError, ProfileError) as e:
        errors.print(f"[bold red]input error:[/] {escape(str(e))}", soft_wrap=True)
        manifest_note(e)
        raise typer.Exit(EXIT_BAD_INPUT)
    except TrainingDiverged as e:
        errors.print(f"[bold red]training diverged:[/] {escape(str(e))}")
        manifest_note(e, "; nothing of that stage was cached")
        raise typer.Exit(EXIT_GATE_FAILED)
    except Exception as e:
        full = full_disk_error(e)
        if full is not None:  # a full disk (bytes or inodes) met where no code named it: input, not a bug
            errors.print(f"[bold red]input error:[/] the disk is full: {escape(describe(full))}; free some room (or "
                         "move --out or --cache-dir) and re-run: the stages finished so far stay cached", soft_wrap=True)
            manifest_note(e)
            raise typer.Exit(EXIT_BAD_INPUT)
        errors.print_exception()
        errors.print("[bold red]internal error[/] (a bug in edgekiln)")
        manifest_note(e)
        raise typer.Exit(EXIT_INTERNAL)


def verdict(passed: bool, unchecked: int = 0) -> None:
    """Say the verdict as `run` says it ("PASSED with N budgets not checked" where some could
    not be decided: never a bare PASSED for them) and exit 0 or 1."""
    from edgekiln.gates import verdict as words

    style = "[bold red]" if not passed else "[bold yellow]" if unchecked else "[bold green]"
    console.print(style + words(passed, unchecked))
    raise typer.Exit(EXIT_OK if passed else EXIT_GATE_FAILED)


def report_failures(failures, after: str) -> int:
    """Say which reports could not be written and why; the exit code: 3 for a bug in the
    report step (its traceback shown), else 2 (an output that cannot be written)."""
    from rich.traceback import Traceback

    for f in failures:
        if f.bug:
            errors.print(Traceback.from_exception(type(f.error), f.error, f.error.__traceback__))
        errors.print(f"[bold red]{f.name} was not written:[/] {escape(f.message())}")
    errors.print(f"({after})")
    return EXIT_INTERNAL if any(f.bug for f in failures) else EXIT_BAD_INPUT
