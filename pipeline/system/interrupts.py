"""SIGTERM and SIGINT end a run cleanly: the signal becomes an exception that unwinds the
run, so every temporary file and folder is removed on the way out (each write is a
temporary file and a rename), the manifest records where the run stopped, and a re-run
resumes (finished stages are cached, the one under way from its last epoch checkpoint).
Where a signal must not cut a write (`deferred`), it takes effect as the write ends."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

SIGNALS = (signal.SIGTERM, signal.SIGINT)
_critical = 0  # depth of `deferred` sections under way
_pending: int | None = None  # a signal that arrived inside one


class Interrupted(BaseException):
    """The run was stopped by a signal. A BaseException, like KeyboardInterrupt, so no
    `except Exception` on the way out mistakes it for a failure of the code it interrupts."""

    def __init__(self, signum: int):
        self.signum = signum
        self.signal = signal.Signals(signum).name
        super().__init__(f"interrupted by {self.signal}")

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal's number (130 SIGINT, 143 SIGTERM)."""
        return 128 + self.signum


@contextlib.contextmanager
def raising() -> Iterator[None]:
    """While inside, SIGTERM and SIGINT raise Interrupted (in the main thread only: Python
    delivers signals there; elsewhere this does nothing). The previous handlers come back."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        global _pending
        if _critical:
            _pending = signum  # taken when the section ends
            return
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A section a signal must not cut: one that arrives inside takes effect when it ends.
    For writes through C++ that call back into Python (torch.save to a file object): an
    exception raised in the callback comes out as torch's RuntimeError, not Interrupted."""
    global _critical, _pending
    _critical += 1
    try:
        yield
    finally:
        _critical -= 1
        if _critical == 0 and _pending is not None:
            signum, _pending = _pending, None
            raise Interrupted(signum)
