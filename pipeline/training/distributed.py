"""Training across processes with PyTorch's own engine (torchrun + DistributedDataParallel).

Under `torchrun` (or `edgekiln run --nproc-per-node N`, which launches it), rank 0 runs the
pipeline as a single process would: it alone reads and writes the cache, converts, exports,
times and writes the manifest. The other ranks run nothing of their own: they follow rank 0
into every training loop. When rank 0 builds a Trainer it sends its arguments and state to
the followers, which build the same one, and each `train_until` runs on every rank, each on
its share of every batch, with gradients averaged by DistributedDataParallel. So the ranks
never disagree on a cache hit or a decision: only rank 0 makes them.

A failure on any rank ends every rank: torchrun stops the group when a process exits, and
the collective operations time out (EDGEKILN_DIST_TIMEOUT_S) rather than hang.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

# `edgekiln run --nproc-per-node` names a file here for rank 0's exit code (see record_exit_code).
EXIT_CODE_FILE = "EDGEKILN_EXIT_CODE_FILE"
# Followers wait on rank 0 between training loops (conversions, exports, device timings):
# hours are plausible there. Inside a training loop, a silent rank is a failure.
_CONTROL_TIMEOUT_S = 6 * 3600
_control_group = None


def timeout_s() -> int:
    return int(os.environ.get("EDGEKILN_DIST_TIMEOUT_S", "600"))


def world() -> tuple[int, int]:
    """(rank, world size): (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_leader() -> bool:
    return world()[0] == 0


def init_from_env() -> bool:
    """Join the process group torchrun describes (WORLD_SIZE > 1): NCCL on GPUs, gloo on the
    CPU. Returns whether this process is one of several."""
    global _control_group
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=timeout_s()))
        _control_group = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=_CONTROL_TIMEOUT_S))
    return True


def device() -> torch.device:
    """This rank's device: its local GPU, or the CPU."""
    # init_from_env made the rank's local GPU the current one
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def send(job: Any) -> None:
    """Rank 0: hand `job` to every follower (a no-op in a single process)."""
    if world()[1] > 1 and is_leader():
        dist.broadcast_object_list([job], src=0, group=_control_group)


def _receive() -> Any:
    box = [None]
    dist.broadcast_object_list(box, src=0, group=_control_group)
    return box[0]


def follow() -> None:
    """A follower's whole life: build and train what rank 0 builds and trains, until it says
    it is done (None)."""
    from edgekiln.progress import console
    from edgekiln.training import trainer

    console.quiet = True  # rank 0 reports; the followers' bars and notes would repeat it
    trainers: dict[int, trainer.Trainer] = {}
    while (job := _receive()) is not None:
        kind, ident, payload = job
        if kind == "new":
            kwargs, state = payload
            trainers[ident] = trainer.Trainer(**kwargs, resumable=False)
            trainers[ident].load_state(state)
        elif kind == "train_until":
            trainers[ident].train_until(payload)
        elif kind == "drop":
            trainers.pop(ident, None)
    # Leave the group now that rank 0 is done with it: its threads stopped at interpreter
    # exit abort the process (std::terminate), which the launcher would take for a failure.
    dist.destroy_process_group()


def done() -> None:
    """Rank 0: release the followers (they exit), whatever way the run ended."""
    send(None)


def record_exit_code(code: int) -> None:
    """Rank 0: note the exit code the run ended with for the launcher that started it, which
    may otherwise see another rank's exit first and stop this one before it exits."""
    path = os.environ.get(EXIT_CODE_FILE)
    if path and is_leader():
        with open(path, "w") as f:
            f.write(str(int(code)))


def recorded_exit_code() -> int | None:
    """The launcher: the exit code rank 0 recorded, or None (it did not get that far)."""
    try:
        with open(os.environ[EXIT_CODE_FILE]) as f:
            return int(f.read())
    except (KeyError, OSError, ValueError):
        return None


def shard(indices: torch.Tensor) -> torch.Tensor:
    """This rank's share of a batch: every world-size-th index from its rank on."""
    rank, size = world()
    return indices[rank::size] if size > 1 else indices


def launch(nproc: int, argv: list[str]) -> int:
    """`python -m edgekiln.interfaces.cli ARGV` on `nproc` local processes through torchrun's
    launcher; the exit code is rank 0's (0, 1 or 2), or 3 when another rank failed first."""
    import sys
    import tempfile
    import uuid

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from edgekiln.errors import EXIT_BAD_INPUT, EXIT_GATE_FAILED, EXIT_INTERNAL, EXIT_OK
    from edgekiln.progress import console

    # As torchrun does: processes that share the cores must not each start a thread per core
    # (OpenMP threads spin while they wait: oversubscribed, training ran 10x slower).
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=uuid.uuid4().hex,
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.5)
    # Rank 0 writes the exit code it decided on here: the launcher's view of it is lost when
    # another rank's exit is seen first and rank 0 is stopped before its own exit.
    with tempfile.TemporaryDirectory(prefix="edgekiln-launch-") as scratch:
        os.environ[EXIT_CODE_FILE] = str(Path(scratch) / "exit_code")
        try:
            elastic_launch(config, sys.executable)("-m", "edgekiln.interfaces.cli", *argv)
            codes = {}
        except ChildFailedError as e:
            codes = {rank: failure.exitcode for rank, failure in e.failures.items()}
        finally:
            recorded = recorded_exit_code()
            del os.environ[EXIT_CODE_FILE]
    if recorded is not None:
        return recorded
    if not codes:
        return EXIT_OK
    if codes.get(0) in (EXIT_GATE_FAILED, EXIT_BAD_INPUT, EXIT_INTERNAL):
        return codes[0]
    first = min(codes)
    console.print(f"[bold red]rank {first} of {nproc} failed (exit code {codes[first]}); every rank was "
                  "stopped: see its output above")
    return EXIT_INTERNAL
