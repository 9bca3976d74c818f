"""Auto schedules (training/schedule.py): train until val stops improving, a cap, or within
budget; the best epoch's weights kept; resumable; recorded. The stopping rules on a scripted
trainer, then one real loop."""

import pytest
import torch

from edgekiln.data.dataset import DataConfig, load_dataset
from edgekiln.engine.config import ConfigError, config_from_text
from edgekiln.training import config, evaluation, modeling, schedule, trainer


class ScriptedTrainer:
    """A trainer whose val accuracy after each epoch is scripted and whose one weight is the
    epoch it was trained to, so the weights it ends with name their epoch."""

    def __init__(self, seconds_per_epoch=1.0):
        self.model = torch.nn.Linear(1, 1, bias=False)
        self.epoch, self.epoch_seconds, self.notes, self.saved = 0, [], {}, 0
        self.dev = torch.device("cpu")
        self.seconds_per_epoch = seconds_per_epoch

    def train_until(self, epoch):
        while self.epoch < epoch:
            self.epoch += 1
            self.epoch_seconds.append(self.seconds_per_epoch)
            with torch.no_grad():
                self.model.weight.fill_(self.epoch)

    def current(self):
        return self.model

    def save(self):
        self.saved += 1


def _run(scores, trainer=None, within=None, **plan):
    trainer = trainer or ScriptedTrainer()
    plan = schedule.Schedule(None, **{"max_epochs": 50, **plan})
    record = schedule.train_auto(trainer, plan, lambda: scores[trainer.epoch - 1], within)
    return trainer, record


def test_it_stops_after_patience_epochs_without_improvement_and_keeps_the_best_weights():
    trainer, record = _run([50, 60, 60.05, 59, 58, 57, 70], patience=3, min_delta=0.1)
    assert record["epochs"] == 5 and record["best_epoch"] == 2 and record["best_val_accuracy"] == 60
    assert "no val improvement over 0.1 points in 3 epochs" in record["stopped"]
    assert trainer.model.weight.item() == 2  # epoch 2's weights, not epoch 5's
    assert [h[1] for h in record["val_history"]] == [50, 60, 60.05, 59, 58] and trainer.saved == 5


def test_it_stops_at_max_epochs_or_max_minutes():
    _, record = _run(list(range(100)), max_epochs=6)
    assert record["epochs"] == 6 and record["stopped"] == "max_epochs = 6 reached" and record["best_epoch"] == 6
    _, record = _run(list(range(100)), trainer=ScriptedTrainer(seconds_per_epoch=45), max_minutes=2)
    assert record["epochs"] == 3 and record["stopped"].startswith("max_minutes = 2 reached")


def test_a_student_stops_as_soon_as_it_is_within_budget():
    _, record = _run([50, 70, 80, 90, 95], within=lambda accuracy: accuracy >= 80)
    assert record["epochs"] == 3 and record["stopped"].startswith("within budget with margin at epoch 3")


def test_an_interrupted_auto_loop_resumes_with_its_history_and_best_weights():
    scores = {1: 50, 2: 60, 3: 55, 4: 54, 5: 53, 6: 52}
    trainer = ScriptedTrainer()
    plan = schedule.Schedule(None, max_epochs=50, patience=3)

    def interrupted():
        if trainer.epoch == 3:
            raise KeyboardInterrupt  # epoch 3 trained and checkpointed, never scored
        return scores[trainer.epoch]

    with pytest.raises(KeyboardInterrupt):
        schedule.train_auto(trainer, plan, interrupted)
    assert trainer.notes["auto"]["history"] == [[1, 50], [2, 60]]
    record = schedule.train_auto(trainer, plan, lambda: scores[trainer.epoch])  # the checkpoint's notes, resumed
    assert record["val_history"] == [[1, 50], [2, 60], [3, 55], [4, 54], [5, 53]]
    assert record["epochs"] == 5 and record["best_epoch"] == 2 and trainer.model.weight.item() == 2


def test_a_trainer_handed_over_already_trained_is_scored_before_it_trains_on():
    trainer = ScriptedTrainer()
    trainer.train_until(4)  # a search round
    scores = {4: 70, 5: 65, 6: 64}
    record = schedule.train_auto(trainer, schedule.Schedule(None, max_epochs=50, patience=2), lambda: scores[trainer.epoch])
    assert record["val_history"] == [[4, 70], [5, 65], [6, 64]] and trainer.model.weight.item() == 4


def test_budget_margin_holds_a_student_to_its_budget_less_the_margin():
    from edgekiln.engine.config import BudgetConfig
    from edgekiln.gates import holds_with_margin

    holds = holds_with_margin(0.5, "distill", ("teacher", 90.0), 90.0, BudgetConfig(max_drop_total=2.0))
    assert holds(88.5) and not holds(88.4)
    assert holds_with_margin(0.5, "distill", ("teacher", 90.0), 90.0, None) is None


def test_a_real_auto_loop_records_what_it_ran_and_why_it_stopped():
    data = load_dataset(DataConfig(source="digits", image_size=32, max_samples=160, test_fraction=0.0))
    bundle = modeling.bundle("mobilenetv3_small_050", modeling.create("mobilenetv3_small_050", 10, seed=0), 10, 32)
    plan = schedule.Schedule(None, max_epochs=3, patience=1, min_delta=0.0)
    fitted = trainer.fit(bundle, data, plan, lr=3e-3, seed=0, desc="auto", train=config.TrainConfig(batch_size=32))
    record = fitted["schedule"]
    assert record["mode"] == "auto" and 1 <= record["epochs"] <= 3 and len(record["val_history"]) == record["epochs"]
    assert evaluation.evaluate(bundle, data) == pytest.approx(record["best_val_accuracy"])
    fixed = trainer.fit(bundle, data, 1, lr=3e-3, seed=0, desc="fixed", train=config.TrainConfig(batch_size=32))
    assert fixed["schedule"] == {"mode": "fixed", "epochs": 1, "stopped": "epochs = 1"}


_TARGET = '\n[[targets]]\nname = "s"\nformat = "onnx"\n'


def test_auto_is_accepted_for_every_training_loop_and_a_bad_value_is_named():
    cfg = config_from_text('[teacher]\ncandidates = ["resnet10t"]\nepochs = "auto"\nmax_epochs = 7\n'
                           '[student]\nepochs = "auto"\n[prune]\nfinetune_epochs = "auto"\n'
                           '[quantize]\nmode = "qat"\nepochs = "auto"\n' + _TARGET)
    assert (cfg.teacher.epochs, cfg.student.epochs, cfg.prune.finetune_epochs, cfg.quantize.epochs) == ("auto",) * 4
    plan = schedule.from_config(cfg.teacher, cfg.train)
    assert plan.auto and plan.length == 7 and plan.patience == schedule.PATIENCE
    assert schedule.from_config(cfg.prune, cfg.train, "finetune_epochs").length == 30
    with pytest.raises(ConfigError, match=r'student.epochs = "automatic" \(line \d+\): must be "auto" or a whole number of epochs from 0 '
                                          r"to 1000, not 'automatic'"):
        config_from_text('[teacher]\ncandidates = ["resnet10t"]\n[student]\nepochs = "automatic"\n' + _TARGET)
