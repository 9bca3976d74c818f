"""The teacher's outputs on a training split are computed once and kept on disk for the
loops and runs that distil from the same teacher on the same images; a damaged entry is
computed again, and another teacher or image set gets its own."""

import torch

from edgekiln.data.config import DataConfig
from edgekiln.data.dataset import load_dataset
from edgekiln.training import distillation, modeling, teacher_outputs


def _teacher(seed: int, classes: int):
    model = modeling.create("resnet10t", classes, seed=seed, image_size=16)
    return distillation.Teacher([modeling.bundle("resnet10t", model, classes, 16, source="test")])


def test_outputs_are_computed_once_then_reused_and_checked(tmp_path, monkeypatch):
    data = load_dataset(DataConfig(source="digits", image_size=16, max_samples=120))
    teacher = _teacher(0, data.num_classes)
    fresh = teacher.precompute(data.train_x)[0]
    with teacher_outputs.storing(tmp_path):
        (first, _), made = teacher_outputs.outputs(teacher, data)
        (again, _), reused = teacher_outputs.outputs(teacher, data)
    assert made["stored"] and not made["reused"] and reused["reused"] and reused["entry"] == made["entry"]
    torch.testing.assert_close(again, fresh)
    torch.testing.assert_close(first, fresh)
    # a damaged entry is computed again, not read
    logits = tmp_path / made["entry"] / "logits.npy"
    logits.write_bytes(logits.read_bytes()[:-8] + b"\0" * 8)
    calls = []
    monkeypatch.setattr(distillation.Teacher, "precompute",
                        lambda self, *a, **k: calls.append(1) or (fresh.clone(), None))
    with teacher_outputs.storing(tmp_path):
        (_, _), redone = teacher_outputs.outputs(teacher, data)
        assert not redone["reused"] and calls == [1]
        # another teacher, or other images, is another entry
        (_, _), other = teacher_outputs.outputs(_teacher(1, data.num_classes), data)
        fewer = load_dataset(DataConfig(source="digits", image_size=16, max_samples=100))
        (_, _), elsewhere = teacher_outputs.outputs(teacher, fewer)
    assert len({redone["entry"], other["entry"], elsewhere["entry"]}) == 3 and calls == [1, 1, 1]
    # without a folder, every loop computes its own
    (_, _), own = teacher_outputs.outputs(teacher, data)
    assert own == {"stored": False, "reused": False, "seconds": own["seconds"]}


def test_only_the_newest_entries_are_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(teacher_outputs, "KEEP", 2)
    data = load_dataset(DataConfig(source="digits", image_size=16, max_samples=100))
    with teacher_outputs.storing(tmp_path):
        entries = [teacher_outputs.outputs(_teacher(seed, data.num_classes), data)[1]["entry"] for seed in range(3)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(entries[1:])


def test_under_augmentation_the_teacher_runs_on_every_step_and_its_time_is_counted(tmp_path):
    from edgekiln.training import trainer
    from edgekiln.training.config import DistillConfig, TrainConfig

    data = load_dataset(DataConfig(source="digits", image_size=16, max_samples=100))
    student = modeling.bundle("resnet10t", modeling.create("resnet10t", data.num_classes, seed=1, image_size=16),
                              data.num_classes, 16, source="test")
    with teacher_outputs.storing(tmp_path):
        loop = trainer.Trainer(student, data, 1, lr=1e-3, seed=0, desc="test", resumable=False, kd=DistillConfig(),
                               train=TrainConfig(batch_size=32, translate=0.1), teacher=_teacher(0, data.num_classes))
        loop.train_until(1)
    assert loop.cached is None and loop.teacher_outputs is None and not list(tmp_path.iterdir())
    assert loop.notes["teacher_step_seconds"] > 0
