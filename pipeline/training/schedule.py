"""How long a training loop runs: a fixed number of epochs, or `"auto"`: until the val
accuracy stops improving, or a cap, or (for a student, with `[train]
stop_when_within_budget`) as soon as it is within its accuracy budget with a margin.

An auto loop's learning-rate schedule spans its cap (`max_epochs`: warm-up, then cosine),
its val accuracy is measured after every epoch, and the best epoch's weights are the ones
it keeps. Stopping after `patience` epochs without an improvement of more than
`min_delta` points is the usual early stopping; keeping the best weights makes a stop
late in a plateau cost nothing. Every decision is on val; the epochs it ran and why it
stopped are recorded. The run's time budget (edgekiln.time_budget) stops a loop at its
stage's deadline, after at least one epoch. Resumable: the history and the best weights
live in the trainer's checkpoint (`Trainer.notes`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from edgekiln import time_budget

# Documented defaults ([train] patience, min_delta, within_budget_margin).
PATIENCE = 4
MIN_DELTA = 0.1  # points of val accuracy
WITHIN_BUDGET_MARGIN = 0.5  # points: a student stops at a drop of at most its budget less this


@dataclass(frozen=True)
class Schedule:
    """A loop's length: `epochs` fixed, or None for auto with its caps and stopping rule."""

    epochs: int | None
    max_epochs: int = 0
    max_minutes: float | None = None
    patience: int = PATIENCE
    min_delta: float = MIN_DELTA
    key: str = "epochs"  # the config key that set it, for messages and records

    @property
    def auto(self) -> bool:
        return self.epochs is None

    @property
    def length(self) -> int:
        """The epochs the learning-rate schedule spans (the cap, for auto)."""
        return self.max_epochs if self.auto else self.epochs


def from_config(section, train, key: str = "epochs") -> Schedule:
    """The schedule a stage section sets (`key` = "epochs" or "finetune_epochs", with its
    `max_epochs` and `max_minutes`), under `[train]`'s patience and min_delta."""
    value = getattr(section, key)
    if value != "auto":
        return Schedule(int(value), key=key)
    return Schedule(None, max_epochs=section.max_epochs, max_minutes=section.max_minutes,
                    patience=train.patience, min_delta=train.min_delta, key=key)


def fixed(epochs: int) -> Schedule:
    return Schedule(int(epochs))


def train_auto(trainer, schedule: Schedule, score: Callable[[], float],
               within_budget: Callable[[float], bool] | None = None, until: int | None = None) -> dict:
    """Train `trainer` one epoch at a time until `schedule` stops it; leave the best epoch's
    weights in it. `score()`: val accuracy of the model as it stands; `within_budget(acc)`:
    whether a student may stop there. A trainer handed over already trained (a student
    search's survivor, a resumed run whose last epoch was not scored) is scored first.
    `until`: a round of a student search: stop at this epoch too, and leave the weights of
    the last epoch (the loop goes on from them; its history and best carry over). Returns
    the record of what happened."""
    state = trainer.notes.setdefault("auto", {"history": [], "best_epoch": None, "best": None})

    def scored() -> None:
        accuracy = score()
        trainer.current().to(trainer.dev)  # scoring left it on the CPU; an EMA copy updates on the device
        state["history"].append([trainer.epoch, accuracy])
        if state["best"] is None or accuracy > state["best"] + schedule.min_delta:
            state.update(best=accuracy, best_epoch=trainer.epoch,
                         weights={k: v.detach().clone() for k, v in trainer.current().state_dict().items()})

    if trainer.epoch > 0 and (not state["history"] or state["history"][-1][0] != trainer.epoch):
        scored()
    while (stopped := _why_stop(state, trainer, schedule, within_budget)) is None:
        if until is not None and trainer.epoch >= until:
            return {"epochs": trainer.epoch, "best_epoch": state["best_epoch"], "best_val_accuracy": state["best"],
                    "stopped": None, "val_history": [list(h) for h in state["history"]]}
        trainer.train_until(trainer.epoch + 1)
        scored()
        trainer.save()  # the history and best weights with the epoch's checkpoint
    if state.get("weights") is not None and state["best_epoch"] != trainer.epoch:
        trainer.current().load_state_dict(state["weights"])
    return {"mode": "auto", "epochs": trainer.epoch, "best_epoch": state["best_epoch"],
            "best_val_accuracy": state["best"], "stopped": stopped, "val_history": [list(h) for h in state["history"]],
            "max_epochs": schedule.max_epochs, "max_minutes": schedule.max_minutes, "patience": schedule.patience,
            "min_delta": schedule.min_delta, "minutes": round(sum(trainer.epoch_seconds) / 60, 2),
            "cut_by_time_budget": time_budget.is_cut(stopped)}


def _why_stop(state: dict, trainer, schedule: Schedule, within_budget) -> str | None:
    history = state["history"]
    if history and within_budget is not None and within_budget(history[-1][1]):
        return f"within budget with margin at epoch {trainer.epoch} ({history[-1][1]:.2f}% val)"
    if history and trainer.epoch - state["best_epoch"] >= schedule.patience:
        return (f"no val improvement over {schedule.min_delta:g} points in {schedule.patience} epochs "
                f"(best {state['best']:.2f}% at epoch {state['best_epoch']})")
    if trainer.epoch >= schedule.max_epochs:
        return f"max_epochs = {schedule.max_epochs} reached"
    minutes = sum(trainer.epoch_seconds) / 60
    if schedule.max_minutes is not None and minutes >= schedule.max_minutes:
        return f"max_minutes = {schedule.max_minutes:g} reached ({minutes:.1f} min)"
    if trainer.epoch >= 1 and (why := time_budget.expired()) is not None:  # never ship an untrained model
        time_budget.cut(f"{getattr(trainer, 'desc', 'a loop')} after {trainer.epoch} epochs")
        return why
    return None


def fixed_record(schedule: Schedule) -> dict:
    return {"mode": "fixed", "epochs": schedule.epochs, "stopped": f"{schedule.key} = {schedule.epochs}"}
