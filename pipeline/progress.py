"""The one console every stage and the runner print to, and the epoch progress bar."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

# Off a terminal (CI logs, pipes) rich would assume 80 columns and squeeze the tables.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 140)
# Errors go to stderr: a script that reads a command's output gets its results, and a CI log
# or a terminal shows both.
errors = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 140)


def epoch_bar() -> Progress:
    """A transient progress bar for training loops (one task per model being trained)."""
    return Progress(
        TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
        console=console, transient=True,
    )
