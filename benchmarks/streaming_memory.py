"""Peak memory and read speed of an image folder's training split, in memory against streamed,
and of the same images as WebDataset shards (--shards).

    .venv/bin/python benchmarks/streaming_memory.py [--sizes 2000 20000] [--image-size 224] [--shards]

Generates a folder of 224 px JPEGs (10 classes of rendered shapes and noise, written once
under --root), then, each in a fresh process so its peak RSS is its own: loads the data as
`edgekiln run` does (`[data] streaming = false`, then `true`) and reads one epoch of
training batches (batch 64, shuffled), which is what every training stage does each epoch.
Prints peak RSS, load time and images per second of the epoch. With --shards, the folder is
also written as shards of 1,000 samples (train 90%, val 5%, test 5%, written once) and read
streamed in the same way, in the epoch order a shuffle buffer of 5,000 gives: the first load
indexes the shards, the second reads the kept index.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np


def _render(job: tuple[Path, int, int, int]) -> None:
    from PIL import Image, ImageDraw

    path, label, seed, size = job
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(3 + label):
        x, y = rng.integers(0, size, 2)
        r = int(rng.integers(size // 16, size // 4))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if label % 2 else draw.rectangle)((x - r, y - r, x + r, y + r), fill=color)
    image.save(path, quality=90)


def make_folder(root: Path, count: int, size: int) -> Path:
    """`count` JPEGs in 10 class folders under root/N (kept: written once)."""
    folder = root / f"{count}-{size}px"
    done = folder / ".complete"
    if done.exists():
        return folder
    jobs = []
    for i in range(count):
        label = i % 10
        (folder / f"class{label}").mkdir(parents=True, exist_ok=True)
        jobs.append((folder / f"class{label}" / f"{i:06d}.jpg", label, i, size))
    with Pool() as pool:
        pool.map(_render, jobs, chunksize=64)
    done.touch()
    return folder


def make_shards(folder: Path) -> Path:
    """The folder's images as shards under folder.shards/ (kept: written once)."""
    import webdataset as wds

    out = folder.with_name(folder.name + "-shards")
    done = out / ".complete"
    if done.exists():
        return out
    out.mkdir(exist_ok=True)
    files = sorted(folder.rglob("*.jpg"))
    n = len(files)
    parts = {"train": files[: n * 9 // 10], "val": files[n * 9 // 10: n * 19 // 20], "test": files[n * 19 // 20:]}
    for split, members in parts.items():
        order = np.random.default_rng(0).permutation(len(members))  # shards hold the classes mixed
        with wds.ShardWriter(str(out / f"{split}-%06d.tar"), maxcount=1000, verbose=0) as sink:
            for i in order:
                f = members[i]
                sink.write({"__key__": f.stem, "jpg": f.read_bytes(), "cls": f.parent.name.removeprefix("class")})
    done.touch()
    return out


def _pattern(shards: Path, split: str) -> str:
    count = len(list(shards.glob(f"{split}-*.tar")))
    return str(shards / f"{split}-{{000000..{count - 1:06d}}}.tar")


def measure_shards(shards: Path, size: int) -> dict:
    """In this (fresh) process: index the shards (then load again from the kept index), then
    read one epoch of training batches in a shuffle buffer's order."""
    import tempfile

    import torch

    from edgekiln.data.config import DataConfig
    from edgekiln.data.dataset import load_dataset
    from edgekiln.data.image_files import batches

    config = DataConfig(source="webdataset", shards=_pattern(shards, "train"), val_shards=_pattern(shards, "val"),
                        test_shards=_pattern(shards, "test"), image_size=size, streaming=True)
    with tempfile.TemporaryDirectory() as index_dir:
        started = time.perf_counter()
        load_dataset(config, index_dir=Path(index_dir))
        first = time.perf_counter() - started
        started = time.perf_counter()
        data = load_dataset(config, index_dir=Path(index_dir))
        loaded = time.perf_counter() - started
    order = data.epoch_order(torch.Generator().manual_seed(0))
    index_batches = [order[i:i + 64] for i in range(0, len(order), 64)]
    started = time.perf_counter()
    seen = sum(len(batch) for batch in batches(data.train_x, index_batches, data.workers))
    epoch = time.perf_counter() - started
    return {"images": len(data.train_y) + len(data.val_y) + len(data.test_y), "train": seen,
            "workers": data.workers, "index_s": round(first, 1), "load_s": round(loaded, 1),
            "epoch_images_per_s": round(seen / epoch),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def measure(folder: Path, size: int, streaming: bool) -> dict:
    """In this (fresh) process: load, then read one epoch of training batches."""
    import torch

    from edgekiln.data.config import DataConfig
    from edgekiln.data.dataset import load_dataset
    from edgekiln.data.image_files import batches

    started = time.perf_counter()
    data = load_dataset(DataConfig(source="imagefolder", path=folder, image_size=size, val_fraction=0.05,
                                   test_fraction=0.05, streaming=streaming))
    loaded = time.perf_counter() - started
    order = torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(0))
    index_batches = [order[i:i + 64] for i in range(0, len(order), 64)]
    started = time.perf_counter()
    seen = sum(len(batch) for batch in batches(data.train_x, index_batches, data.workers))
    epoch = time.perf_counter() - started
    return {"images": len(data.train_y) + len(data.val_y) + len(data.test_y), "train": seen,
            "streaming": streaming, "workers": data.workers, "load_s": round(loaded, 1),
            "epoch_images_per_s": round(seen / epoch),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            # the largest decoding worker (forked: much of its RSS is pages it shares with this process)
            "worker_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--root", type=Path, default=Path("/tmp/edgekiln-bench-folders"))
    parser.add_argument("--shards", action="store_true", help="also as WebDataset shards")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child[2] == "shards":
            print(json.dumps(measure_shards(Path(args.child[0]), int(args.child[1]))))
        else:
            print(json.dumps(measure(Path(args.child[0]), int(args.child[1]), args.child[2] == "1")))
        return 0
    if args.shards:
        print("| images | shards | decoding threads | first load (indexing) s | load with the kept index s "
              "| epoch images/s | peak RSS MB |")
        print("|---|---|---|---|---|---|---|")
        for count in args.sizes:
            shards = make_shards(make_folder(args.root, count, args.image_size))
            done = subprocess.run([sys.executable, __file__, "--child", str(shards), str(args.image_size), "shards"],
                                  capture_output=True, text=True, check=True)
            r = json.loads(done.stdout.splitlines()[-1])
            print(f"| {r['images']} | {len(list(shards.glob('*.tar')))} | {r['workers']} | {r['index_s']} | "
                  f"{r['load_s']} | {r['epoch_images_per_s']} | {r['peak_rss_mb']} |", flush=True)
        return 0
    print("| images | training split | workers | load s | epoch images/s | peak RSS MB | largest worker's peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for count in args.sizes:
        folder = make_folder(args.root, count, args.image_size)
        for streaming in (False, True):
            done = subprocess.run([sys.executable, __file__, "--child", str(folder), str(args.image_size),
                                   "1" if streaming else "0"], capture_output=True, text=True, check=True)
            r = json.loads(done.stdout.splitlines()[-1])
            print(f"| {r['images']} | {'streamed' if streaming else 'in memory'} | {r['workers']} | {r['load_s']} | "
                  f"{r['epoch_images_per_s']} | {r['peak_rss_mb']} | {r['worker_peak_rss_mb'] or '-'} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
