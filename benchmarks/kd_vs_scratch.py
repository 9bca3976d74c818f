"""Does distillation pay? Students trained from scratch against the same students distilled
(logit KD, and logit KD + FitNets hint) from one teacher, over several seeds; and what a
distillation epoch costs with and without the teacher-logit cache, against a plain
training epoch of the student, measured in the same run.

    .venv/bin/python benchmarks/kd_vs_scratch.py [--seeds 3] [--epochs 10] [--teacher-epochs 8]
        [--students mobilevit_xxs ...] [--no-timing]

A short --teacher-epochs gives a weaker teacher, to see what KD from it does.

Uses edgekiln's own training loop and recipe ([train] defaults) on digits at 32 px.
Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402

from edgekiln.data.dataset import DataConfig, load_dataset  # noqa: E402
from edgekiln.training import distillation, evaluation, modeling, trainer  # noqa: E402
from edgekiln.training.config import DistillConfig, TrainConfig  # noqa: E402

STUDENTS = {"mobilenetv3_small_050": 6e-3, "mobilevit_xxs": 3e-3}  # lr per student, as in examples/
TEACHER = "resnet18"


def student(arch: str, data, seed: int) -> modeling.ModelBundle:
    return modeling.bundle(arch, modeling.create(arch, data.num_classes, seed=seed), data.num_classes,
                           data.image_size)


def spread(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--teacher-epochs", type=int, default=8)
    parser.add_argument("--students", nargs="+", default=list(STUDENTS), choices=list(STUDENTS))
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument("--timing-only", action="store_true")
    args = parser.parse_args()
    students = {arch: STUDENTS[arch] for arch in args.students}
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    data = load_dataset(DataConfig(source="digits", image_size=32, seed=0))
    train = TrainConfig()
    started = time.perf_counter()
    teacher = modeling.bundle(TEACHER, modeling.create(TEACHER, data.num_classes, seed=0), data.num_classes, 32)
    trainer.fit(teacher, data, args.teacher_epochs, lr=3e-3, seed=0, desc="teacher", train=train)
    teacher_acc = evaluation.evaluate(teacher, data)
    print(f"teacher {TEACHER}: {teacher_acc:.2f}% after {args.teacher_epochs} epochs "
          f"({time.perf_counter() - started:.0f} s); data: {len(data.train_y)} train / {len(data.val_y)} val\n")

    if not args.timing_only:
        accuracy_table(data, teacher, students, train, args)
    if not args.no_timing:
        timing_table(data, teacher, students, train)


def accuracy_table(data, teacher, students, train, args) -> None:
    print(f"| student | scratch | logit KD | logit KD + FitNets | KD - scratch |  (val top-1 %, mean ± std over "
          f"{args.seeds} seeds, {args.epochs} epochs)")
    print("|---|---|---|---|---|")
    for arch, lr in students.items():
        results: dict[str, list[float]] = {"scratch": [], "kd": [], "fitnets": []}
        for seed in range(args.seeds):
            for arm in results:
                s = student(arch, data, seed)
                kd = DistillConfig(feature_loss="fitnets" if arm == "fitnets" else "none")
                signal, hint = distillation.hinted_teacher([teacher], s, kd) if arm != "scratch" else (None, None)
                trainer.fit(s, data, args.epochs, lr=lr, seed=seed, desc=f"{arch} {arm} seed {seed}", train=train,
                             teacher=signal, hint=hint, kd=kd)
                results[arm].append(evaluation.evaluate(s, data))
        gain = [k - s for k, s in zip(results["kd"], results["scratch"])]
        print(f"| {arch} | {spread(results['scratch'])} | {spread(results['kd'])} | {spread(results['fitnets'])} "
              f"| {spread(gain)} |", flush=True)


def timing_table(data, teacher, students, train, rounds: int = 3) -> None:
    """Epoch wall time of plain training, KD with the teacher-logit cache and KD with a live
    teacher. Each figure: the median of epochs 2-4 of a run (the first warms up), and the
    best of `rounds` interleaved runs, so that a slow moment of this shared host does not
    land on one variant only."""
    print("\n| student | plain epoch s | KD epoch, cached teacher s | ratio | KD epoch, live teacher s | ratio | "
          "one-off teacher pass s |")
    print("|---|---|---|---|---|---|---|")
    for arch, lr in students.items():
        kd = DistillConfig()
        variants = {"plain": {}, "cached": dict(teacher=distillation.Teacher([teacher]), kd=kd),
                    "live": dict(teacher=distillation.Teacher([teacher]), kd=kd, cache_teacher=False)}
        best = {name: float("inf") for name in variants}
        for _ in range(rounds):
            for name, kw in variants.items():
                log = trainer.fit(student(arch, data, 0), data, 4, lr=lr, seed=0, desc=f"{arch} {name}", train=train,
                                   **kw)
                best[name] = min(best[name], statistics.median(log["epoch_seconds"][1:]))
                if name == "cached":
                    precompute = log["teacher_precompute_seconds"]
        plain, cached, live = best["plain"], best["cached"], best["live"]
        print(f"| {arch} | {plain:.2f} | {cached:.2f} | {cached / plain:.3f} | {live:.2f} | {live / plain:.3f} "
              f"| {precompute:.2f} |", flush=True)


if __name__ == "__main__":
    main()
