"""Errors raised by the artifact formats."""


class ConversionError(Exception):
    """A model could not be converted to a format; names the format and, where known, the op."""

    def __init__(self, fmt: str, message: str, op: str | None = None):
        self.fmt, self.op = fmt, op
        where = f" (op: {op})" if op else ""
        super().__init__(f"{fmt} conversion failed{where}: {message}")


class RuntimeUnavailable(Exception):
    """The format's runtime cannot run on this machine (e.g. Core ML off macOS)."""
