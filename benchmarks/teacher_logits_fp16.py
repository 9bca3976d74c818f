"""What keeping the teacher's logits in float16 costs: the error it puts on the softened
probabilities the distillation loss reads, and the accuracy of students distilled from
float16 logits against the same students (same seed, same batches) distilled from float32
ones, over several seeds; and the memory either takes for a large set.

    .venv/bin/python benchmarks/teacher_logits_fp16.py [--seeds 3] [--epochs 10] [--teacher-epochs 6]

Uses edgekiln's own training loop on digits at 32 px: teacher resnet10t, student
mobilenetv3_small_050 (lr 6e-3, as in examples/). Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from edgekiln.data.dataset import DataConfig, load_dataset  # noqa: E402
from edgekiln.training import distillation, evaluation, modeling, trainer  # noqa: E402

TEACHER, STUDENT, STUDENT_LR = "resnet10t", "mobilenetv3_small_050", 6e-3


def softened_error(full: torch.Tensor, half: torch.Tensor, temperature: float) -> tuple[float, float, float]:
    """(largest absolute error of a softened probability, largest relative error of one above
    1e-6, largest KL in nats) of float16 logits against float32 ones."""
    p = F.softmax(full.float() / temperature, 1)
    q = F.softmax(half.float() / temperature, 1)
    relative = ((q - p).abs() / p)[p > 1e-6].max().item()
    kl = F.kl_div(q.log(), p, reduction="none").sum(1).max().item()
    return (q - p).abs().max().item(), relative, kl


def distil(data, teacher, seed: int, epochs: int, logits: torch.Tensor) -> float:
    """Val accuracy of a student distilled from `logits` (the teacher's, in some precision)."""
    student = modeling.bundle(STUDENT, modeling.create(STUDENT, data.num_classes, seed=seed), data.num_classes, 32)
    loop = trainer.Trainer(student, data, epochs, lr=STUDENT_LR, seed=seed, desc="student",
                           teacher=distillation.Teacher([teacher]), resumable=False)
    loop.cached = (logits, None)
    loop.train_until(epochs)
    loop.finish()
    return evaluation.evaluate(student, data)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--teacher-epochs", type=int, default=6)
    args = parser.parse_args()
    data = load_dataset(DataConfig(source="digits", image_size=32, seed=0)).for_stages()
    teacher = modeling.bundle(TEACHER, modeling.create(TEACHER, data.num_classes, seed=0), data.num_classes, 32)
    trainer.fit(teacher, data, args.teacher_epochs, lr=3e-3, seed=0, desc="teacher", resumable=False)
    full, _ = distillation.Teacher([teacher]).precompute(data.train_x, logits_dtype=torch.float32)
    half, _ = distillation.Teacher([teacher]).precompute(data.train_x)
    print(f"teacher {TEACHER}: val {evaluation.evaluate(teacher, data):.2f}%; logits of {len(full)} images, "
          f"largest |logit - row max| {full.abs().max():.1f}\n")
    print("| temperature | largest error of a softened probability (absolute) | (relative, p > 1e-6) "
          "| largest KL(fp32 ‖ fp16), nats |")
    print("|---|---|---|---|")
    for t in (1.0, 4.0):
        absolute, relative, kl = softened_error(full, half, t)
        print(f"| {t:g} | {absolute:.1e} | {relative:.1e} | {kl:.1e} |")
    rows = []
    for seed in range(args.seeds):
        rows.append((seed, *(distil(data, teacher, seed, args.epochs, logits) for logits in (full, half))))
    print(f"\nStudent {STUDENT}, {args.epochs} epochs, val accuracy % ({len(data.val_y)} images: one is "
          f"{100 / len(data.val_y):.2f} points)\n")
    print("| seed | float32 logits | float16 logits | difference |")
    print("|---|---|---|---|")
    for seed, a, b in rows:
        print(f"| {seed} | {a:.2f} | {b:.2f} | {b - a:+.2f} |")
    diffs = [b - a for _, a, b in rows]
    print(f"| mean | {statistics.mean(a for _, a, _ in rows):.2f} | {statistics.mean(b for _, _, b in rows):.2f} "
          f"| {statistics.mean(diffs):+.2f} |")
    print("\nMemory for 1,000,000 images of 1,000 classes: float32 4.0 GB, float16 2.0 GB.")


if __name__ == "__main__":
    main()
