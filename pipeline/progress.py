"""The one console every stage and the runner print to, and the progress of long work: a bar
and a spinner on a terminal; off a terminal (a CI log, a pipe) plain lines, one per epoch and
at least one every 30 s, so a log never goes quiet for minutes."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def tolerate_narrow_encodings(streams=None) -> None:
    """Let a console whose encoding lacks the characters edgekiln prints ("—", "→", "±":
    PYTHONIOENCODING=ascii, some CI consoles) print them as "?" instead of failing: what a
    run did and its exit code never depend on the console's encoding."""
    for stream in streams or (sys.stdout, sys.stderr):
        encoding = getattr(stream, "encoding", None) or "utf-8"
        try:
            "—→±≤".encode(encoding)
        except (UnicodeEncodeError, LookupError):
            with contextlib.suppress(AttributeError, ValueError, OSError):
                stream.reconfigure(errors="replace")


tolerate_narrow_encodings()
# Off a terminal (CI logs, pipes) rich would assume 80 columns and squeeze the tables.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 140)
# Errors go to stderr: a script that reads a command's output gets its results, and a CI log
# or a terminal shows both.
errors = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 140)

# Off a terminal: the longest a log goes without a line while work is under way.
LOG_EVERY_S = 30.0


def _elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class _Heartbeat:
    """A line every `every` seconds from a background thread while work is under way."""

    def __init__(self, line, every: float):
        self._line, self._every = line, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            console.print(self._line(), soft_wrap=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


class LogProgress:
    """rich.progress.Progress's calls (add_task, update) as log lines: one per update (an
    epoch, a layer), or, with `every` seconds, at most one per `every` seconds and the last;
    and a line every LOG_EVERY_S while an update is awaited (an epoch under way)."""

    def __init__(self, every: float = 0.0, heartbeat: float | None = None):
        self.every, self.heartbeat = every, LOG_EVERY_S if heartbeat is None else heartbeat
        self.tasks: dict[int, dict] = {}
        self._beat: _Heartbeat | None = None
        self._started = time.monotonic()

    def add_task(self, description: str, total: float | None = None, completed: float = 0, **fields) -> int:
        task = len(self.tasks)
        self.tasks[task] = {"description": description, "total": total, "completed": completed,
                            "fields": fields, "printed": -float("inf")}
        return task

    def update(self, task: int, advance: float = 0, completed: float | None = None, **fields) -> None:
        record = self.tasks[task]
        record["completed"] = completed if completed is not None else record["completed"] + advance
        record["fields"].update(fields)
        now = time.monotonic()
        last = record["total"] is not None and record["completed"] >= record["total"]
        if last or now - record["printed"] >= self.every:
            record["printed"] = now
            console.print(self._line(record), soft_wrap=True)

    def _line(self, record: dict, under_way: bool = False) -> str:
        done, total = record["completed"], record["total"]
        count = f"{int(done)}/{int(total)}" if total is not None else f"{int(done)}"
        status = record["fields"].get("status") or ""
        if under_way:
            return f"  {record['description']}: {count} done, the next under way ({_elapsed(time.monotonic() - self._started)})"
        return f"  {record['description']}: {count}" + (f", {status}" if status else "") + \
            f" ({_elapsed(time.monotonic() - self._started)})"

    def _pending(self) -> str:
        open_tasks = [r for r in self.tasks.values() if r["total"] is None or r["completed"] < r["total"]]
        return self._line(open_tasks[-1] if open_tasks else list(self.tasks.values())[-1], under_way=True)

    def __enter__(self) -> "LogProgress":
        self._beat = _Heartbeat(lambda: self._pending() if self.tasks else "  working", self.heartbeat).__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._beat is not None:
            self._beat.__exit__(*exc)


def epoch_bar(every: float = 0.0) -> Progress | LogProgress:
    """A transient progress bar for training loops (one task per model being trained); off a
    terminal, log lines (LogProgress: one per update, or at most one per `every` seconds)."""
    if not console.is_terminal:
        return LogProgress(every)
    return Progress(
        TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
        console=console, transient=True,
    )


class _LogStatus:
    """What `status` yields off a terminal: `update` changes the message the next line shows."""

    def __init__(self, message: str):
        self.message = message

    def update(self, message: str) -> None:
        self.message = message


@contextlib.contextmanager
def status(message: str) -> Iterator[object]:
    """A spinner with `message` on a terminal while work is under way; off a terminal, the
    message as a line, then a line every LOG_EVERY_S until the work is done. Yields an object
    whose `update(message)` changes the message."""
    if console.is_terminal:
        with console.status(message) as spinner:
            yield spinner
        return
    started, current = time.monotonic(), _LogStatus(message)
    console.print(message, soft_wrap=True)
    with _Heartbeat(lambda: f"{current.message} (still working, {_elapsed(time.monotonic() - started)})",
                    LOG_EVERY_S):
        yield current
