"""lr = "auto": a learning-rate range test finds the rate (training/lr_range.py)."""

import math

import pytest
import torch

from edgekiln.data.dataset import DataConfig, load_dataset
from edgekiln.training import lr_range, modeling
from edgekiln.training.config import TrainConfig
from edgekiln.stages.teacher import TeacherSections


def test_the_rate_is_a_tenth_of_the_one_at_the_lowest_smoothed_loss():
    rates = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    rate, why = lr_range.choose(rates, [2.3, 2.0, 1.2, 1.5, 9.0])
    assert rate == pytest.approx(1e-3) and "a tenth of 0.01" in why


def test_a_range_test_on_real_images_finds_a_rate_inside_its_range_and_records_its_curve():
    data = load_dataset(DataConfig(source="digits", image_size=16, max_samples=300))
    arch = "mobilenetv3_small_050"
    bundle = modeling.bundle(arch, modeling.create(arch, data.num_classes, seed=0), data.num_classes, 16)
    before = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    found = lr_range.find(bundle, data, TrainConfig(batch_size=16), seed=0, steps=25)
    assert lr_range.LOW / 10 <= found["lr"] <= lr_range.HIGH / 10
    assert 5 <= found["steps"] <= 25 and found["curve"] and found["seconds"] >= 0
    rates = [r for r, _ in found["curve"]]
    assert rates == sorted(rates) and all(math.isfinite(loss) for _, loss in found["curve"])
    assert all(torch.equal(before[k], v) for k, v in bundle.model.state_dict().items())  # a copy trained, not it
    again = lr_range.find(bundle, data, TrainConfig(batch_size=16), seed=0, steps=25)
    assert again["lr"] == found["lr"]  # seeded: a resumed run finds the same rate


def test_auto_is_the_only_word_a_learning_rate_takes():
    from pydantic import ValidationError

    from edgekiln.stages.distill import StudentConfig

    assert StudentConfig(lr="auto").lr == "auto" and StudentConfig(lr=1).lr == 1.0
    with pytest.raises(ValidationError, match='must be "auto" or a learning rate above 0'):
        StudentConfig(lr="fast")
    with pytest.raises(ValidationError, match='must be "auto" or a learning rate above 0'):
        StudentConfig(lr=0)


def test_a_teacher_on_auto_records_the_rate_it_trained_at(tmp_path):
    from edgekiln.stages.teacher import TeacherConfig
    from edgekiln.stages.teacher import work as teacher

    data = load_dataset(DataConfig(source="digits", image_size=16, max_samples=120))
    result = teacher.run(data, TeacherSections(teacher=TeacherConfig(candidates=["mobilenetv3_small_050"], epochs=1, lr="auto"),
                                train=TrainConfig(batch_size=16)), tmp_path)
    found = result.figures.candidates[0].lr
    assert found["lr"] > 0 and "smoothed loss was lowest" in found["why"] and found["curve"]


def test_a_range_test_whose_loss_is_never_finite_stops_as_a_diverged_loop_naming_it():
    from edgekiln.errors import TrainingDiverged

    data = load_dataset(DataConfig(source="digits", image_size=16, max_samples=60))
    arch = "mobilenetv3_small_050"
    bundle = modeling.bundle(arch, modeling.create(arch, data.num_classes, seed=0), data.num_classes, 16)
    with torch.no_grad():
        next(bundle.model.parameters()).fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="distill m: the learning-rate range test .* non-finite loss"):
        lr_range.find(bundle, data, TrainConfig(batch_size=16), seed=0, steps=10, desc="distill m")
