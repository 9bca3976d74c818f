"""Errors a stage raises: bad input (the CLI maps it to exit code 2) and a diverged training run."""

from edgekiln.targets.errors import InputError

__all__ = ["InputError", "TrainingDiverged"]


class TrainingDiverged(Exception):
    """A training loop produced a non-finite loss or weights: the stage stops, nothing of it
    is cached, and the run fails (exit 1), naming the stage, epoch, step and the likely key."""
