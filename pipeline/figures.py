"""How a figure is written in every report (console, report.html, model card): "-" where the
run has none."""

from __future__ import annotations


def num(value, fmt: str = ".2f") -> str:
    """A figure, or "-" when there is none."""
    return "-" if value is None else format(value, fmt)


def text(value) -> str:
    """A value as text, or "-" when there is none."""
    return "-" if value is None else str(value)


def kilobytes(value) -> str:
    """A size in kB, or "-"."""
    return "-" if value is None else f"{value / 1e3:.0f} KB"


def millions(value) -> str:
    """A count in millions, or "-"."""
    return "-" if value is None else f"{value / 1e6:.2f}M"


def verdict(passed) -> str:
    """A gate's outcome: pass, FAIL, or "-" when none was recorded."""
    return "-" if passed is None else "pass" if passed else "FAIL"
