"""What unlabelled images buy a distilled student: most of the training split's labels are
hidden, and four arms are graded on the same test split.

  (a) the student trained on the labelled part alone (no teacher);
  (b) a teacher fine-tuned on the labelled part, distilled into the student on that part;
  (c) the same teacher, distilled on the labelled part and the now-unlabelled rest (KD term
      only for those: [data] unlabelled_path's loop, data/unlabelled.py);
  (d) a zero-shot CLIP teacher (`--clip DIR`: a CLIP model saved with save_pretrained)
      distilled on every training image, no label used; left out without one (no weights
      can be downloaded on the machine this table was made on).

Every arm trains on `epochs = "auto"` (training/schedule.py: until val stops improving for
[train] patience epochs, the best epoch kept, within a cap), so no arm is cut short by a
hand-set count: (c) gets a cap of `--cap` epochs over all its images and [train]'s patience;
the arms on the labelled part alone a cap of `--labelled-cap` epochs and a patience as many
times longer as their epochs are shorter, so every arm waits as many steps for a gain (an
epoch of 100 images is two steps: four of them are no patience at all). The recipe is [train]'s default (no augmentation,
so the teacher's outputs are computed once). The gain of (c) over (b) is a paired
difference on the same test images, with its 95% interval.

    .venv/bin/python benchmarks/unlabelled.py [--dataset digits fashion] [--labelled 0.1]
        [--fashion-train 4000] [--teacher resnet14t] [--student mobilenetv3_small_050]
        [--cap 40] [--labelled-cap 300] [--clip DIR] [--tiny]

--tiny: digits only, caps of 2 epochs: the slow suite's check that this script runs.
Prints one Markdown table per dataset.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402

from edgekiln.data import unlabelled  # noqa: E402
from edgekiln.data.dataset import DataConfig, load_dataset  # noqa: E402
from edgekiln.stats import accuracy_interval, hits, paired_drop  # noqa: E402
from edgekiln.training import distillation, evaluation, modeling, schedule, trainer, zero_shot  # noqa: E402
from edgekiln.training.config import DistillConfig, TrainConfig  # noqa: E402

FASHION = Path("/usr/share/datasets/fashion-mnist")
RECIPE = TrainConfig()


def hide_labels(data, fraction: float, seed: int):
    """(labelled part, the same with the rest of the training split as unlabelled images):
    a stratified `fraction` of each class keeps its labels."""
    generator = torch.Generator().manual_seed(seed)
    keep = []
    for label in data.train_y.unique():
        members = (data.train_y == label).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        keep.append(members[: max(1, round(fraction * len(members)))])
    keep = torch.cat(keep).sort().values
    rest = torch.ones(len(data.train_y), dtype=torch.bool)
    rest[keep] = False
    labelled = dataclasses.replace(data, train_x=data.train_x[keep], train_y=data.train_y[keep])
    with_rest = dataclasses.replace(labelled, unlabelled_x=data.train_x[rest],
                                    unlabelled={"images": int(rest.sum())})
    return labelled, unlabelled.joined(with_rest)


def graded(bundle, data):
    top1 = evaluation.logits(bundle, data.test_x).argmax(1).tolist()
    return hits(top1, data.test_y.tolist())


def train(arch, data, cap, teacher=None, seed=0, lr=3e-3, patience=RECIPE.patience):
    """`arch` trained on `data` until val stops improving for `patience` epochs (at most `cap`
    epochs); (bundle, epochs run, seconds)."""
    bundle = modeling.bundle(arch, modeling.create(arch, data.num_classes, seed=seed), data.num_classes,
                             data.image_size)
    plan = schedule.Schedule(None, max_epochs=cap, patience=patience, min_delta=RECIPE.min_delta)
    started = time.perf_counter()
    fitted = trainer.fit(bundle, data, plan, lr=lr, seed=seed, desc=arch, train=RECIPE,
                         teacher=None if teacher is None else distillation.Teacher([teacher]),
                         kd=None if teacher is None else DistillConfig(), resumable=False)
    return bundle, fitted["schedule"]["epochs"], time.perf_counter() - started


def one_dataset(name: str, data, args) -> None:
    labelled, joined = hide_labels(data, args.labelled, data.seed)
    n_l, n_all = len(labelled.train_y), len(joined.train_y)
    print(f"\n### {name}: {n_l} labelled of {n_all} training images ({args.labelled:.0%}), "
          f"{len(data.val_y)} val, {len(data.test_y)} test (one test image = {100 / len(data.test_y):.2f} points)\n",
          flush=True)
    print("| arm | teacher | images the student trains on | student epochs (auto) | test % (95% CI) | minutes |\n"
          "|---|---|---|---|---|---|", flush=True)
    rows = {}

    def row(arm, teacher_name, images, epochs, bundle, seconds):
        correct = graded(bundle, data)
        low, high = accuracy_interval(correct)
        rows[arm] = correct
        print(f"| {arm} | {teacher_name} | {images} | {epochs} | {100 * correct.mean():.2f} [{low:.1f}, {high:.1f}] | "
              f"{seconds / 60:.1f} |", flush=True)

    patience = round(RECIPE.patience * n_all / n_l)  # as many steps without a gain as (c) waits
    student, epochs, seconds = train(args.student, labelled, args.labelled_cap, patience=patience)
    row("(a) supervised, labelled only", "-", f"{n_l} labelled", epochs, student, seconds)
    teacher, t_epochs, t_seconds = train(args.teacher, labelled, args.labelled_cap, patience=patience)
    t_correct = graded(teacher, data)
    teacher_name = f"{args.teacher} on the labelled part, {t_epochs} epochs ({100 * t_correct.mean():.2f}% test)"
    student, epochs, seconds = train(args.student, labelled, args.labelled_cap, teacher=teacher, patience=patience)
    row("(b) KD, labelled only", teacher_name, f"{n_l} labelled", epochs, student, seconds + t_seconds)
    student, epochs, seconds = train(args.student, joined, args.cap, teacher=teacher)
    row("(c) KD, labelled + unlabelled rest", teacher_name, f"{n_l} labelled + {n_all - n_l} unlabelled",
        epochs, student, seconds + t_seconds)
    if args.clip:
        clip = zero_shot.create(f"clip:{args.clip}", data.classes)
        clip_bundle = modeling.bundle(f"clip:{args.clip}", clip, data.num_classes, data.image_size, native_size=True)
        everything = dataclasses.replace(joined, train_y=torch.full_like(joined.train_y, unlabelled.NO_LABEL))
        student, epochs, seconds = train(args.student, everything, args.cap, teacher=clip_bundle)
        row("(d) KD from zero-shot CLIP, no labels", f"clip:{args.clip}", f"{n_all} unlabelled",
            epochs, student, seconds)
    gain = paired_drop(rows["(c) KD, labelled + unlabelled rest"], rows["(b) KD, labelled only"])
    print(f"\ngain of (c) over (b): {gain.drop:+.2f} points [{gain.low:+.2f}, {gain.high:+.2f}] (paired, same "
          f"{len(data.test_y)} test images); (d): "
          + ("above" if args.clip else "not run: no CLIP weights here (--clip DIR)"), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", nargs="+", choices=["digits", "fashion"], default=["digits", "fashion"])
    parser.add_argument("--labelled", type=float, default=0.1, help="share of the training split that keeps labels")
    parser.add_argument("--fashion-train", type=int, default=4000, help="images drawn from Fashion-MNIST's train files")
    parser.add_argument("--teacher", default="resnet14t")
    parser.add_argument("--student", default="mobilenetv3_small_050")
    parser.add_argument("--cap", type=int, default=40, help="epochs at most over every training image ((c), (d))")
    parser.add_argument("--labelled-cap", type=int, default=300, help="epochs at most over the labelled part")
    parser.add_argument("--clip", type=Path, default=None, help="a CLIP model directory for arm (d)")
    parser.add_argument("--tiny", action="store_true", help="digits only, 2 epochs: that it runs")
    args = parser.parse_args(argv)
    if args.tiny:
        args.dataset, args.teacher, args.cap, args.labelled_cap = ["digits"], "resnet10t", 2, 2
        args.labelled = 0.3
    for name in args.dataset:
        if name == "digits":
            data = load_dataset(DataConfig(source="digits", image_size=32, max_samples=400 if args.tiny else None))
        else:
            data = load_dataset(DataConfig(source="idx", path=FASHION, image_size=32, max_samples=args.fashion_train))
        one_dataset("digits (sklearn, 8x8 scans at 32 px)" if name == "digits" else
                    "Fashion-MNIST (Debian's dataset-fashion-mnist, official t10k test)", data, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
