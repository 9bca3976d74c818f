"""Errors a stage raises for bad input (the CLI maps them to exit code 2)."""


class InputError(Exception):
    """Bad input: a missing or unreadable file, an unknown model name, an unusable data folder.
    The message names the config key, file or candidate at fault."""


class TrainingDiverged(Exception):
    """A training loop produced a non-finite loss or weights: the stage stops, nothing of it
    is cached, and the run fails (exit 1), naming the stage, epoch, step and the likely key."""
