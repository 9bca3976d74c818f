"""Fixed against auto schedules on data edgekiln was not tuned on: Fashion-MNIST (Debian's
dataset-fashion-mnist), a training subset at 32 px, graded on the official 10,000 t10k
images. Each arm trains a teacher from scratch, then distils a student from its own teacher;
the fixed arm with hand-set epochs, the auto arm with `epochs = "auto"` (training/schedule.py:
patience, min_delta and a cap). Every decision of the auto arm is on val; the figures are
on test.

    .venv/bin/python benchmarks/auto_epochs.py [--train 3000] [--teacher resnet14t] [--student mobilenetv3_small_100]
        [--fixed-teacher 8] [--fixed-student 16] [--max-teacher 40] [--max-student 40] [--arm fixed --arm auto] [--tiny]

--student may be repeated: each student is distilled from the same teacher of its arm.

--tiny: 400 images, caps of 2 epochs: the slow suite's check that this script runs.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TQDM_DISABLE", "1")

from edgekiln.data.dataset import DataConfig, load_dataset  # noqa: E402
from edgekiln.stats import accuracy_interval, hits, paired_drop  # noqa: E402
from edgekiln.training import distillation, evaluation, modeling, schedule, trainer  # noqa: E402
from edgekiln.training.config import TrainConfig  # noqa: E402
from edgekiln.training.config import DistillConfig

FASHION = Path("/usr/share/datasets/fashion-mnist")
RECIPE = TrainConfig(translate=0.1, hflip=True)  # examples/fashion_mnist.toml's [train]


def _test(bundle, data):
    top1 = evaluation.logits(bundle, data.test_x).argmax(1).tolist()
    correct = hits(top1, data.test_y.tolist())
    return correct, 100.0 * sum(correct) / len(correct), accuracy_interval(correct)


def _train(arch, data, epochs, lr, teacher=None, seed=0):
    bundle = modeling.bundle(arch, modeling.create(arch, data.num_classes, seed=seed), data.num_classes,
                             data.image_size)
    started = time.perf_counter()
    fitted = trainer.fit(bundle, data, epochs, lr=lr, seed=seed, desc=f"{arch}", train=RECIPE,
                          teacher=None if teacher is None else distillation.Teacher([teacher]),
                          kd=DistillConfig() if teacher is not None else None, resumable=False)
    return bundle, fitted["schedule"], time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=3000, help="images drawn from the train files (80%% train, 20%% val)")
    parser.add_argument("--teacher", default="resnet14t")
    parser.add_argument("--student", action="append", help="repeatable (default: mobilenetv3_small_100)")
    parser.add_argument("--arm", action="append", choices=["fixed", "auto"], help="repeatable (default: both)")
    parser.add_argument("--fixed-teacher", type=int, default=8)
    parser.add_argument("--fixed-student", type=int, default=16)
    parser.add_argument("--max-teacher", type=int, default=40)
    parser.add_argument("--max-student", type=int, default=40)
    parser.add_argument("--tiny", action="store_true", help="400 images, caps of 2 epochs (a smoke test)")
    args = parser.parse_args()
    args.student = args.student or ["mobilenetv3_small_100"]
    if args.tiny:
        args.train, args.teacher, args.student = 400, "resnet10t", ["mobilenetv3_small_050"]
        args.fixed_teacher = args.fixed_student = 1
        args.max_teacher = args.max_student = 2
    data = load_dataset(DataConfig(source="idx", path=FASHION, image_size=32, max_samples=args.train))
    print(f"Fashion-MNIST: {len(data.train_y)} train / {len(data.val_y)} val images from the train files; "
          f"test: the {len(data.test_y)} t10k images (one image = {100 / len(data.test_y):.2f} points)", flush=True)
    train = TrainConfig()
    arms = {"fixed": (args.fixed_teacher, args.fixed_student),
            "auto": (schedule.Schedule(None, max_epochs=args.max_teacher, patience=train.patience,
                                       min_delta=train.min_delta),
                     schedule.Schedule(None, max_epochs=args.max_student, patience=train.patience,
                                       min_delta=train.min_delta))}
    print("\n| arm | model | epochs (why it stopped) | val % | test % (95% CI) | test drop vs its teacher (95% CI) "
          "| minutes |\n|---|---|---|---|---|---|---|", flush=True)
    for arm, (teacher_epochs, student_epochs) in arms.items():
        if args.arm and arm not in args.arm:
            continue
        teacher, record, seconds = _train(args.teacher, data, teacher_epochs, 3e-3)
        teacher_correct, accuracy, ci = _test(teacher, data)
        print(f"| {arm} | teacher {args.teacher} | {record['epochs']} ({record['stopped']}) | "
              f"{evaluation.evaluate(teacher, data):.2f} | {accuracy:.2f} [{ci[0]:.1f}, {ci[1]:.1f}] | - | "
              f"{seconds / 60:.1f} |", flush=True)
        for name in args.student:
            student, record, seconds = _train(name, data, student_epochs, 3e-3, teacher=teacher)
            correct, accuracy, ci = _test(student, data)
            drop = paired_drop(teacher_correct, correct)
            print(f"| {arm} | student {name} | {record['epochs']} ({record['stopped']}) | "
                  f"{evaluation.evaluate(student, data):.2f} | {accuracy:.2f} [{ci[0]:.1f}, {ci[1]:.1f}] | "
                  f"{drop.drop:+.2f} [{drop.low:+.2f}, {drop.high:+.2f}] | {seconds / 60:.1f} |", flush=True)


if __name__ == "__main__":
    main()
