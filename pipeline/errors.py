"""Errors a stage raises: bad input (the CLI maps it to exit code 2) and a diverged training
run; and the exit codes every command ends with (interfaces/exits.py maps errors to them)."""

from edgekiln.system.errors import InputError

__all__ = ["InputError", "TrainingDiverged", "EXIT_OK", "EXIT_GATE_FAILED", "EXIT_BAD_INPUT", "EXIT_INTERNAL"]

# 0 every gate passed, 1 a gate failed, 2 bad config or input, 3 an internal error (a bug:
# never reported as a failed gate, so release scripts can tell them apart). An interrupted
# run exits 128 + the signal (targets/interrupts.py).
EXIT_OK, EXIT_GATE_FAILED, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3


class TrainingDiverged(Exception):
    """A training loop produced a non-finite loss or weights: the stage stops, nothing of it
    is cached, and the run fails (exit 1), naming the stage, epoch, step and the likely key."""
