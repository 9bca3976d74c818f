"""Training throughput at 224 px on a streamed image folder, on 1 and 2 processes.

    .venv/bin/python benchmarks/scale.py [--images 20000] [--train-images 512] [--procs 1 2]

Uses the generated folder of benchmarks/streaming_memory.py (20,000 JPEGs at 224 px, 10
classes), streamed (`[data] streaming = true`). For each process count, each rank (gloo on
the CPU, NCCL where torch sees GPUs) times one epoch of teacher fine-tuning (resnet10t) and
one epoch of distillation (mobilenetv3_small_100 from that teacher, teacher outputs computed
in the step) over the first --train-images training images, through edgekiln's own
Trainer and DistributedDataParallel. Prints images per second (all ranks together), the
scaling efficiency (N-process throughput / N x the 1-process throughput) and each rank's
peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch
from streaming_memory import make_folder


def _epoch(folder: Path, train_images: int) -> dict:
    from edgekiln.data.config import DataConfig
    from edgekiln.data.dataset import Dataset, load_dataset
    from edgekiln.training import distillation, distributed, modeling, trainer
    from edgekiln.training.config import DistillConfig, TrainConfig

    full = load_dataset(DataConfig(source="imagefolder", path=folder, image_size=224, val_fraction=0.05,
                                   test_fraction=0.05, streaming=True))
    data = Dataset(full.train_x.subset(range(train_images)), full.train_y[:train_images], full.val_x[:64],
                   full.val_y[:64], full.classes, "bench", seed=0, workers=full.workers)
    recipe = TrainConfig(batch_size=32)
    teacher = modeling.bundle("resnet10t", modeling.create("resnet10t", 10, seed=0, image_size=224), 10, 224)
    figures = {}
    fitted = trainer.fit(teacher, data, 1, lr=1e-3, seed=0, desc="teacher", train=recipe, resumable=False)
    figures["teacher_images_per_s"] = train_images / fitted["epoch_seconds"][0]
    student = modeling.bundle("mobilenetv3_small_100", modeling.create("mobilenetv3_small_100", 10, seed=0,
                                                                       image_size=224), 10, 224)
    fitted = trainer.fit(student, data, 1, lr=1e-3, seed=0, desc="distill", train=recipe,
                          teacher=distillation.Teacher([teacher]), kd=DistillConfig(), cache_teacher=False,
                          resumable=False)
    figures["distill_images_per_s"] = train_images / fitted["epoch_seconds"][0]
    figures["world_size"] = distributed.world()[1]
    return figures


def _rank(rank: int, world: int, port: int, folder: str, train_images: int, out: str) -> None:
    from edgekiln.training import distributed

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    distributed.init_from_env()
    if rank == 0:
        try:
            figures = _epoch(Path(folder), train_images)
        finally:
            distributed.done()
    else:
        distributed.follow()
        figures = {}
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(f"{out}.{rank}").write_text(json.dumps(figures))
    if world > 1:
        torch.distributed.destroy_process_group()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--train-images", type=int, default=512)
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--root", type=Path, default=Path("/tmp/edgekiln-bench-folders"))
    args = parser.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    folder = make_folder(args.root, args.images, 224)
    device = f"{torch.cuda.device_count()} GPU(s)" if torch.cuda.is_available() else f"CPU, {os.cpu_count()} cores"
    print(f"{args.images} images in {folder}; timing {args.train_images} of them; {device}")
    print("| processes | teacher epoch images/s | distillation epoch images/s | efficiency (teacher, distill) | peak RSS MB per process |")
    print("|---|---|---|---|---|")
    base = None
    for procs in args.procs:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with tempfile.TemporaryDirectory() as tmp:
            out = f"{tmp}/figures"
            torch.multiprocessing.spawn(_rank, args=(procs, port, str(folder), args.train_images, out), nprocs=procs)
            ranks = [json.loads(Path(f"{out}.{r}").read_text()) for r in range(procs)]
        lead = ranks[0]
        base = base or lead
        efficiency = (f"{lead['teacher_images_per_s'] / (procs * base['teacher_images_per_s']):.2f}, "
                      f"{lead['distill_images_per_s'] / (procs * base['distill_images_per_s']):.2f}")
        print(f"| {procs} | {lead['teacher_images_per_s']:.1f} | {lead['distill_images_per_s']:.1f} | {efficiency} | "
              + ", ".join(f"{r['peak_rss_mb']:.0f}" for r in ranks) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
