"""Errors a stage raises for bad input (the CLI maps them to exit code 2)."""


class InputError(Exception):
    """Bad input: a missing or unreadable file, an unknown model name, an unusable data folder.
    The message names the config key, file or candidate at fault."""
