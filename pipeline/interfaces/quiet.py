"""The converters kept quiet on the command line: their progress bars and Python warnings
off, torch's own log at errors only, and the INFO and WARNING lines their native (C++)
logging writes straight to the process's stderr dropped. Errors always come through.

Only the command line does this (a library does not take over a program's stderr);
`edgekiln run --verbose` shows everything."""

from __future__ import annotations

import atexit
import io
import os
import re
import sys
import threading
import warnings

# What the converters' native libraries print on every run: absl's notice before its log is
# initialized, absl/glog-style INFO and WARNING lines (oneDNN's note, op registrations), and
# the LiteRT interpreter's delegate notice. E (error) and F (fatal) lines are never matched.
NATIVE_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} [\d:.]+ +\d+ \S+:\d+\] "
    r"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU\."
    r"|INFO: Initialized TensorFlow Lite runtime\.")

_filtering: threading.Thread | None = None


def quiet_converters() -> None:
    """Before torch's and the converters' imports: tqdm and torch read their settings then."""
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TORCH_LOGS", "-all")  # torch's own log (pytree, dynamo): errors only
    warnings.filterwarnings("ignore")
    import logging

    for name in ("coremltools", "torch", "onnxruntime", "root"):
        logging.getLogger(name).setLevel(logging.ERROR)
    filter_native_stderr()


def filter_native_stderr(noise: re.Pattern = NATIVE_NOISE) -> bool:
    """Route what native code writes to file descriptor 2 through a filter that drops the
    lines `noise` matches (whole lines, from their start) and passes every other line on.
    Python's own sys.stderr (tracebacks, the console) keeps writing to the real stderr
    directly, so nothing of edgekiln's is ever held back. False where stderr is not a file
    descriptor (a test's captured output) or the filter is already on."""
    global _filtering
    if _filtering is not None:
        return False
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):
        return False
    sys.stderr.flush()
    real = os.dup(fd)
    sys.stderr = io.TextIOWrapper(os.fdopen(os.dup(real), "wb"), encoding=sys.stderr.encoding,
                                  errors="backslashreplace", line_buffering=True)
    read_end, write_end = os.pipe()
    os.dup2(write_end, fd)
    os.close(write_end)

    def forward() -> None:  # never stops reading while the pipe is open: a full pipe would block the writers
        with os.fdopen(read_end, "rb") as lines:
            for line in lines:
                if noise.match(line.decode("utf-8", "replace")):
                    continue
                try:
                    os.write(real, line)
                except OSError:  # stderr closed under us: nothing to show it on
                    pass

    _filtering = threading.Thread(target=forward, name="edgekiln-native-stderr", daemon=True)
    _filtering.start()

    def restore() -> None:  # at exit: fd 2 back to the real stderr, and the lines in the pipe drained
        os.dup2(real, fd)
        _filtering.join(timeout=1.0)

    atexit.register(restore)
    return True
