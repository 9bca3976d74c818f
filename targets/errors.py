"""Errors raised by the artifact formats and runners (the bad-input error every room uses is
edgekiln.system.errors')."""


class ConversionError(Exception):
    """A model could not be converted to a format; names the format and the converter's
    own first line of complaint (which usually names the op)."""

    def __init__(self, fmt: str, message: str):
        self.fmt = fmt
        super().__init__(f"{fmt} conversion failed: {message}")


class RuntimeUnavailable(Exception):
    """The format's runtime cannot run on this machine (e.g. Core ML off macOS)."""


class DeviceUnreachable(Exception):
    """The device a profile measures on cannot be reached (no adb, no device, ssh refused).
    A target may then fall back to the estimate runner; otherwise it is bad input (exit 2)."""


class RunnerFailed(Exception):
    """The device was reached but the benchmark on it failed or printed nothing usable;
    names the runner, the command and what it printed."""
