"""Errors raised by the artifact formats and runners, the bad-input error every layer uses,
and the "did you mean" their messages offer for a mistyped name."""

import difflib


class InputError(Exception):
    """Bad input: a missing or unreadable file, an unknown model name, an unusable data folder,
    a device that cannot be reached. The message names the config key, file or candidate at
    fault; the CLI maps it to exit code 2."""


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


def did_you_mean(given: str, names) -> str:
    """" (did you mean 'x'?)" when one of `names` is close to `given` (a typo), else "". Two
    letters swapped count as the closest of typos ('pqt' is 'ptq', not 'qat')."""
    given = str(given)

    def closeness(name: str) -> float:
        swapped = len(name) == len(given) and sorted(name) == sorted(given)
        extends = name.startswith(given) or given.startswith(name)  # a name cut short, or run on
        return difflib.SequenceMatcher(None, given, name).ratio() + (0.3 if swapped else 0.1 if extends else 0.0)

    scored = sorted((-closeness(name), name) for name in set(names) if name != given)
    return f" (did you mean {scored[0][1]!r}?)" if scored and -scored[0][0] >= 0.6 else ""
