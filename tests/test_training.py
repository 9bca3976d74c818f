"""The training recipe and the distillation signal: teacher-logit cache, augmentation,
EMA, FitNets hints."""

import pytest
import torch

from edgekiln.data.dataset import DataConfig, load_dataset
from edgekiln.training import distillation, evaluation, modeling, trainer
from edgekiln.training.config import DistillConfig, TrainConfig
from edgekiln.stages.teacher import TeacherSections


@pytest.fixture(scope="module")
def data():
    return load_dataset(DataConfig(source="digits", image_size=32, max_samples=160, test_fraction=0.0))


def student(arch="mobilenetv3_small_050"):
    return modeling.bundle(arch, modeling.create(arch, 10, seed=0), 10, 32)


class CountingTeacher(distillation.Teacher):
    calls = 0

    def __call__(self, images):
        CountingTeacher.calls += 1
        return super().__call__(images)


def teacher_bundle():
    return modeling.bundle("resnet10t", modeling.create("resnet10t", 10, seed=1), 10, 32)


def test_deterministic_inputs_run_the_teacher_once_per_image_not_per_step(data):
    train = TrainConfig(batch_size=32)
    CountingTeacher.calls = 0
    trainer.fit(student(), data, 2, lr=1e-3, seed=0, desc="t", train=train, teacher=CountingTeacher([teacher_bundle()]))
    cached_calls = CountingTeacher.calls
    assert cached_calls == 1  # one precompute batch (128 images < 256)

    CountingTeacher.calls = 0
    trainer.fit(student(), data, 2, lr=1e-3, seed=0, desc="t", train=train,
                 teacher=CountingTeacher([teacher_bundle()]), cache_teacher=False)
    assert CountingTeacher.calls == 2 * 4  # every step of both epochs


def test_augmented_inputs_run_the_teacher_live(data):
    train = TrainConfig(batch_size=32, randaugment="rand-m9-mstd0.5", mixup=0.2, cutmix=1.0)
    assert not train.deterministic_inputs
    CountingTeacher.calls = 0
    b = student()
    before = [p.clone() for p in b.model.parameters()]
    trainer.fit(b, data, 1, lr=1e-3, seed=0, desc="t", train=train, teacher=CountingTeacher([teacher_bundle()]))
    assert CountingTeacher.calls == 4
    assert any(not torch.equal(a, p) for a, p in zip(before, b.model.parameters()))


def test_training_is_reproducible_for_a_seed(data):
    train = TrainConfig(batch_size=32, randaugment="rand-m9-mstd0.5", mixup=0.2)
    a, b = student(), student()
    trainer.fit(a, data, 1, lr=1e-3, seed=3, desc="t", train=train)
    trainer.fit(b, data, 1, lr=1e-3, seed=3, desc="t", train=train)
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(p, q)


def test_ema_weights_replace_the_trained_weights(data, monkeypatch):
    from timm.utils import ModelEmaV3

    seen = []
    original = ModelEmaV3.update

    def spy(self, model, step=None):
        seen.append(step)
        return original(self, model, step=step)

    monkeypatch.setattr(ModelEmaV3, "update", spy)
    b = student()
    trainer.fit(b, data, 1, lr=1e-3, seed=0, desc="t", train=TrainConfig(batch_size=32, ema_decay=0.9))
    assert seen == [1, 2, 3, 4]


@pytest.mark.parametrize("teacher_arch", ["resnet10t", "vit_tiny_patch16_224"])
def test_fitnets_hint_matches_any_teacher_feature_shape(data, teacher_arch):
    t = modeling.bundle(teacher_arch, modeling.create(teacher_arch, 10, seed=1, image_size=32), 10, 32)
    s = student("mobilevit_xxs")
    kd = DistillConfig(feature_loss="fitnets", feature_weight=1.0)
    teacher, hint = distillation.hinted_teacher([t], s, kd)
    assert hint is not None
    t_logits, t_hint = teacher.to(torch.device("cpu"))(data.train_x[:4].float() / 255)
    features, _ = evaluation.features_and_logits(s.model.eval(), evaluation.model_input(s, data.train_x[:4]))
    assert hint(features).shape == t_hint.shape
    log = trainer.fit(s, data, 1, lr=1e-3, seed=0, desc="t", train=TrainConfig(batch_size=32),
                       teacher=teacher, hint=hint, kd=kd)
    assert len(log["epoch_seconds"]) == 1


def test_a_teacher_ensemble_averages_logits(data):
    a, b = teacher_bundle(), student("mobilenetv3_small_075")
    x = data.train_x[:4]
    mean = (evaluation.logits(a, x) + evaluation.logits(b, x)) / 2
    got, _ = distillation.Teacher([a, b]).to(torch.device("cpu"))(x.float() / 255)
    assert torch.allclose(got, mean, atol=1e-5)


def test_bad_randaugment_string_is_bad_input_before_any_work():
    from edgekiln.errors import InputError
    from edgekiln.stages.teacher import work as teacher

    for bad in ("augmix-m5", "rand-m9-zz3"):
        with pytest.raises(InputError, match="train.randaugment: not a timm RandAugment string"):
            teacher.preflight(TeacherSections(teacher=teacher.TeacherConfig(candidates=["resnet10t"]),
                               train=TrainConfig(randaugment=bad)))


def test_teacher_runs_at_its_own_size_and_normalization(data):
    t = modeling.ModelBundle("resnet10t", modeling.create("resnet10t", 10, seed=1).eval(), 10, 64,
                             mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    x = evaluation.model_input(t, data.train_x[:2])
    assert x.shape[-1] == 64 and x.min() >= -1.0 and x.max() <= 1.0


def test_a_diverging_run_stops_at_once_naming_epoch_step_and_key(data):
    from edgekiln.errors import TrainingDiverged

    with pytest.raises(TrainingDiverged, match=r"distill x: training diverged at epoch 1/3, step \d+: .*student.lr "
                                               r"\(now 1e\+30\)"):
        trainer.fit(student(), data, 3, lr=1e30, seed=0, desc="distill x", lr_key="student.lr",
                     train=TrainConfig(batch_size=32, warmup_epochs=0.0))


def test_bf16_autocast_and_channels_last_train_the_same_model_in_another_precision(data):
    """The CUDA options run on any device: bf16 forward passes land near the float32 weights
    (not on them), and the model comes back in the usual memory layout for export."""
    plain, fast = student(), student()
    trainer.fit(plain, data, 1, lr=1e-3, seed=0, desc="t", train=TrainConfig(batch_size=32))
    trainer.fit(fast, data, 1, lr=1e-3, seed=0, desc="t",
                 train=TrainConfig(batch_size=32, autocast="bf16", channels_last=True))
    moved = [(a - b).abs().max().item() for a, b in zip(plain.model.parameters(), fast.model.parameters())]
    assert 0 < max(moved) < 0.05
    assert all(p.is_contiguous() for p in fast.model.parameters())
    assert all(p.dtype == torch.float32 for p in fast.model.parameters())
