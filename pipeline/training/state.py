"""What a training loop's checkpoint holds besides the model: where the running stage
checkpoints, the RNG states (in types torch.load(weights_only=True) reads back), and the
room a checkpoint takes."""

from __future__ import annotations

import contextlib
import contextvars
import random
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

# Where the running stage's training loops checkpoint every epoch (set by the runner per
# stage key, so a re-run after a kill resumes there); None: no checkpoints.
_CHECKPOINTS: contextvars.ContextVar[Path | None] = contextvars.ContextVar("checkpoints", default=None)


@contextlib.contextmanager
def checkpointing(directory: Path | None) -> Iterator[None]:
    """Training loops inside checkpoint every epoch into `directory` and resume from it."""
    token = _CHECKPOINTS.set(directory)
    try:
        yield
    finally:
        _CHECKPOINTS.reset(token)


def checkpoint_dir() -> Path | None:
    """Where the loops of the running stage checkpoint (None: nowhere)."""
    return _CHECKPOINTS.get()


def checkpoint_bytes(model, ema, hint) -> int:
    """About what one checkpoint of a loop takes: the weights, AdamW's two moments of each,
    the EMA copy and the hint layer (the temporary file and the previous checkpoint
    coexist for a moment, hence twice this when checking the room)."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    trained = sum(p.numel() * p.element_size() for p in model.parameters())
    extra = 0 if ema is None else weights
    extra += 0 if hint is None else 3 * sum(p.numel() * p.element_size() for p in hint.parameters())
    return weights + 2 * trained + extra


def capture_rng() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def rng_for_storage(state: dict) -> dict:
    """The RNG states in types torch.load(weights_only=True) reads back."""
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    return {**state, "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss),
                               float(gauss)], "python": [state["python"][0], list(state["python"][1]),
                                                         state["python"][2]]}


def rng_from_storage(stored: dict) -> dict:
    kind, keys, pos, has_gauss, gauss = stored["numpy"]
    version, internal, gauss_next = stored["python"]
    return {**stored, "numpy": (kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss),
            "python": (version, tuple(internal), gauss_next)}
