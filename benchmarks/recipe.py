"""What each part of the demo's recipe buys, on the demo's splits and teacher.

    .venv/bin/python benchmarks/recipe.py [--work DIR]

Trains the demo's teacher once (resnet14t, 6 epochs, translate 0.1; kept in --work), then
distils each student for 16 epochs with and without translation augmentation, and reports
val, test and INT8-simulated test accuracy (PTQ, the TFLite scheme) against the teacher's
test accuracy. Then times the demo's student search (successive halving over both students)
against distilling each candidate for the full 16 epochs, in the same process.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from edgekiln.calibration import balanced_sample
from edgekiln.data.dataset import DataConfig, load_dataset, to_input
from edgekiln.engine.config import BudgetConfig
from edgekiln.stages.distill import DistillSections
from edgekiln.stages.distill import work as distill
from edgekiln.stages.result import StageResult
from edgekiln.system.records import dumped
from edgekiln.targets.formats.tflite import pt2e
from edgekiln.targets.int8 import Int8Options
from edgekiln.training import distillation, evaluation, modeling, trainer
from edgekiln.training.config import DistillConfig, TrainConfig

STUDENTS = {"mobilenetv3_small_050": 3e-3, "mobilevit_xxs": 3e-3}
EPOCHS = 16


def teacher(data, work: Path) -> modeling.ModelBundle:
    bundle = modeling.bundle("resnet14t", modeling.create("resnet14t", 10, seed=0, image_size=32), 10, 32,
                             source="resnet14t")
    path = work / "teacher.safetensors"
    if path.is_file():
        modeling.load_checkpoint(bundle.model, path)
        return bundle
    trainer.fit(bundle, data, 6, lr=3e-3, seed=0, desc="teacher", train=TrainConfig(translate=0.1))
    from safetensors.torch import save_file

    save_file(bundle.model.state_dict(), path)
    return bundle


def int8_test(bundle, full, data) -> float:
    images = data.train_x[torch.as_tensor(balanced_sample(data.train_y.numpy(), 256, 0))]
    graph = pt2e.simulate(bundle.model, to_input(images, bundle.mean, bundle.std).numpy(), Int8Options())
    return evaluation.accuracy(pt2e.predict(graph, to_input(full.test_x, bundle.mean, bundle.std).numpy()), full.test_y)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, default=Path("/tmp/edgekiln-recipe"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    full = load_dataset(DataConfig())
    data = full.for_stages()
    t = teacher(data, args.work)
    t_test = evaluation.accuracy(evaluation.logits(t, full.test_x), full.test_y)
    print(f"teacher resnet14t: val {evaluation.evaluate(t, data):.2f}%, test {t_test:.2f}%", flush=True)
    print("| student | lr | translate | distill s | val % | test % | INT8 (PTQ, simulated) test % | test drop vs teacher |")
    print("|---|---|---|---|---|---|---|---|")
    seconds = {}
    for arch, lr in STUDENTS.items():
        for translate in (0.0, 0.1):
            s = modeling.bundle(arch, modeling.create(arch, 10, seed=0, image_size=32), 10, 32)
            started = time.perf_counter()
            trainer.fit(s, data, EPOCHS, lr=lr, seed=0, desc=f"{arch} translate {translate}",
                         train=TrainConfig(translate=translate), teacher=distillation.Teacher([t]))
            seconds[(arch, translate)] = time.perf_counter() - started
            q = int8_test(s, full, data)
            test = evaluation.accuracy(evaluation.logits(s, full.test_x), full.test_y)
            print(f"| {arch} | {lr:g} | {translate:g} | {seconds[(arch, translate)]:.0f} | "
                  f"{evaluation.evaluate(s, data):.2f} | {test:.2f} | {q:.2f} | {t_test - q:+.2f} |", flush=True)
    config = DistillSections(student=distill.StudentConfig(arch=list(STUDENTS), epochs=EPOCHS, lr=3e-3,
                                                           select="smallest"),
                             distill=DistillConfig(), train=TrainConfig(translate=0.1),
                             budget=BudgetConfig(max_drop_total=1.0))
    reference = StageResult.with_model(evaluation.evaluate(t, data), t, stage="teacher")
    started = time.perf_counter()
    result = distill.run(data, config, args.work, reference=reference)
    search = time.perf_counter() - started
    each = sum(seconds[(a, 0.1)] for a in STUDENTS)
    student = result.figures.student
    print(f"\nsearch: {student.name} chosen; {student.epochs_spent} epochs trained of "
          f"{student.epochs_if_each_trained_fully}; {search:.0f} s against {each:.0f} s for each candidate "
          f"at {EPOCHS} epochs: {search / each:.2f}x")
    print(json.dumps(dumped(student)["candidates"], indent=1, default=str))


if __name__ == "__main__":
    main()
