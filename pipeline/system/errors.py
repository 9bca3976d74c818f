"""The bad-input error every room raises, and the "did you mean" its messages offer for a
mistyped name."""

import difflib


class InputError(Exception):
    """Bad input: a missing or unreadable file, an unknown model name, an unusable data folder,
    a device that cannot be reached. The message names the config key, file or candidate at
    fault; the CLI maps it to exit code 2."""


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
