"""Student search: successive halving under the budget, the selection rules and their
fallback, resumable training, and candidates the pre-check drops."""

import pytest
import torch
from pydantic import ValidationError

from edgekiln.data.dataset import DataConfig, load_dataset
from edgekiln.engine.config import BudgetConfig
from edgekiln.stages.distill import StudentConfig
from edgekiln.stages.distill import work as distill
from edgekiln.stages.distill.work import going_on, halving_schedule, rank_key
from edgekiln.stages.result import StageResult
from edgekiln.training import evaluation, modeling, state
from edgekiln.training import trainer as training
from edgekiln.training.config import DistillConfig, TrainConfig
from edgekiln.stages.distill import DistillSections


@pytest.fixture(scope="module")
def data():
    return load_dataset(DataConfig(image_size=32, max_samples=200)).for_stages()


def test_halving_schedule_ends_at_the_full_epochs_and_costs_well_under_n_runs():
    assert halving_schedule(1, 10) == [10]
    assert halving_schedule(2, 16) == [8, 16]
    assert halving_schedule(3, 16) == [4, 8, 16]
    assert halving_schedule(4, 16) == [4, 8, 16]
    assert halving_schedule(8, 2) == [1, 1, 1, 2]
    # 4 candidates: 4 x 4 + 2 x 4 more + 1 x 8 more = 32 epochs, against 64 for four full runs
    trained = [4, 4, 8, 16]
    assert sum(trained) == 32 < 4 * 16


def _record(name, accuracy, params, latency=None):
    return {"name": name, "accuracy": accuracy, "params": params, "int8_bytes": params, "latency_ms": latency}


def _pick(records, select, teacher=99.0, budget=1.0):
    within = {r["name"]: teacher - r["accuracy"] <= budget for r in records}
    return max(records, key=lambda r: rank_key(r, select, within[r["name"]]))["name"]


def test_smallest_and_fastest_pick_among_those_within_budget():
    records = [_record("big", 99.0, 3_000_000, 9.0), _record("mid", 98.2, 1_000_000, 2.0),
               _record("tiny", 96.0, 200_000, 1.0)]  # tiny is out of budget
    assert _pick(records, "smallest") == "mid"
    assert _pick(records, "fastest") == "mid"
    assert _pick(records, "accuracy") == "big"


def test_none_within_budget_falls_back_to_the_most_accurate():
    records = [_record("a", 90.0, 100), _record("b", 93.0, 5_000), _record("c", 91.0, 10)]
    assert _pick(records, "smallest") == "b" and _pick(records, "fastest") == "b"


class _Alive:
    def __init__(self, record):
        self.record = record


def test_halving_keeps_the_cheapest_candidate_that_an_early_round_ranks_last():
    # after round 1 nobody is within budget: the top half by accuracy goes on, and so does
    # the fastest (smallest), which is the pick if it gets within budget later
    alive = [_Alive(_record("vit", 96.0, 950_000, 1.2)), _Alive(_record("mnv3", 93.0, 580_000, 0.4)),
             _Alive(_record("narrow", 80.0, 320_000, 0.1)), _Alive(_record("regnet", 60.0, 2_300_000, 0.5))]

    def within(record):
        return 99.0 - record["accuracy"] <= 1.0

    names = {s: [c.record["name"] for c in going_on(alive, s, within)] for s in ("accuracy", "smallest", "fastest")}
    assert names == {"accuracy": ["vit", "mnv3"], "smallest": ["vit", "mnv3", "narrow"],
                     "fastest": ["vit", "mnv3", "narrow"]}
    # per target: each group's own cheapest (here by its latency)
    for c, lat in zip(alive, (1.0, 2.0, 3.0, 0.2)):
        c.record["latency_by_group"] = {"x86": lat}
    assert [c.record["name"] for c in going_on(alive, "fastest", within, "x86")] == ["vit", "mnv3", "regnet"]
    # the cheapest already in the top half: nothing added
    alive[2].record["accuracy"] = 98.5
    assert [c.record["name"] for c in going_on(alive, "smallest", within)] == ["narrow", "vit"]


def test_config_checks_the_candidates_and_the_profile_rule():
    assert StudentConfig(arch=["a", "b"]).candidates == ["a", "b"]
    with pytest.raises(ValidationError, match="twice"):
        StudentConfig(arch=["a", "a"])
    assert StudentConfig(arch=["a", "b"], select="fastest").per_target  # no profile: per target
    assert not StudentConfig(arch=["a", "b"], select="fastest", profile="pixel-3-cpu").per_target
    assert not StudentConfig(arch="a", select="fastest").per_target  # one candidate: nothing to choose
    with pytest.raises(ValidationError, match="only read with select"):
        StudentConfig(arch="a", profile="pixel-3-cpu")


def test_a_stopped_and_resumed_trainer_equals_one_run_straight_through(data):
    def bundle():
        return modeling.bundle("mobilenetv3_small_050", modeling.create("mobilenetv3_small_050", 10, seed=0,
                                                                        image_size=32), 10, 32)
    recipe = TrainConfig(batch_size=32, translate=0.1)
    straight = bundle()
    training.fit(straight, data, 2, lr=3e-3, seed=0, desc="t", train=recipe)
    resumed = bundle()
    trainer = training.Trainer(resumed, data, 2, lr=3e-3, seed=0, desc="t", train=recipe)
    trainer.train_until(1)
    evaluation.evaluate(resumed, data)  # evaluating between rounds must not disturb training
    trainer.train_until(2)
    trainer.finish()
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)


def test_search_distils_each_candidate_and_records_the_rounds(data):
    teacher = modeling.bundle("resnet10t", modeling.create("resnet10t", 10, seed=1, image_size=32), 10, 32)
    training.fit(teacher, data, 2, lr=3e-3, seed=0, desc="teacher")
    reference = StageResult.with_model(evaluation.evaluate(teacher, data), teacher, stage="teacher")
    config = DistillSections(student=StudentConfig(arch=["mobilenetv3_small_050", "mobilenetv3_small_075"], epochs=2,
                                       select="smallest"),
              distill=DistillConfig(), train=TrainConfig(batch_size=32),
              budget=BudgetConfig(max_drop_total=100.0))
    result = distill.run(data, config, None, reference=reference)
    student = result.figures.student
    by_name = {c.name: c for c in student.candidates}
    # everything within a 100-point budget: the smallest wins, the other stopped after round 1
    assert student.name == result.figures.arch == "mobilenetv3_small_050"
    assert by_name["mobilenetv3_small_050"].chosen and by_name["mobilenetv3_small_050"].epochs_trained == 2
    assert by_name["mobilenetv3_small_075"].epochs_trained == 1
    assert "dropped after round 1" in by_name["mobilenetv3_small_075"].why
    assert student.epochs_spent == 3 < student.epochs_if_each_trained_fully == 4
    assert result.accuracy == by_name["mobilenetv3_small_050"].accuracy
    assert result.bundle.arch == "mobilenetv3_small_050"


def test_precheck_drops_a_candidate_that_cannot_convert_and_keeps_the_rest(data, monkeypatch):
    from edgekiln.stages.distill import precheck

    def fake(data, arch, targets):
        if arch.startswith("bad"):
            raise precheck.PrecheckFailed(f"untrained student {arch!r} cannot be converted: op X")
        return [{"student": arch, "format": "onnx"}]
    monkeypatch.setattr(precheck, "_check", fake)
    records, dropped = precheck.run(data, ["good", "bad"], [])
    assert [r["student"] for r in records] == ["good"] and dropped[0]["name"] == "bad"
    assert "op X" in dropped[0]["why"]
    with pytest.raises(precheck.PrecheckFailed, match="no candidate student converts"):
        precheck.run(data, ["bad", "bad2"], [])
    with pytest.raises(precheck.PrecheckFailed, match="'bad' cannot be converted"):
        precheck.run(data, ["bad"], [])  # one candidate: its own message, as before


def test_a_new_trainer_resumes_from_the_last_checkpoint_and_ends_where_a_straight_run_ends(data, tmp_path):
    def bundle():
        return modeling.bundle("mobilenetv3_small_050", modeling.create("mobilenetv3_small_050", 10, seed=0,
                                                                        image_size=32), 10, 32)
    recipe = TrainConfig(batch_size=32, translate=0.1, ema_decay=0.9)
    straight = bundle()
    training.fit(straight, data, 3, lr=3e-3, seed=0, desc="distill s", train=recipe)
    with state.checkpointing(tmp_path):
        killed = bundle()
        first = training.Trainer(killed, data, 3, lr=3e-3, seed=0, desc="distill s", train=recipe)
        first.train_until(2)  # ... then the process dies: only the checkpoint survives
        assert (tmp_path / "distill_s.pt").is_file()
        resumed = bundle()
        second = training.Trainer(resumed, data, 3, lr=3e-3, seed=0, desc="distill s", train=recipe)
        assert second.epoch == 2
        second.train_until(3)
        second.finish()
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)


def test_preflight_names_the_candidate_that_cannot_be_a_student():
    from edgekiln.errors import InputError

    with pytest.raises(InputError, match=r"student.arch\[1\]: unknown timm architecture 'no_such_net'"):
        distill.preflight(DistillSections(student=StudentConfig(arch=["mobilenetv3_small_050", "no_such_net"])))
    with pytest.raises(InputError, match=r"student.arch\[0\]: timm has no pretrained weights"):
        distill.preflight(DistillSections(student=StudentConfig(arch=["edgekiln_no_weights_net", "mobilenetv3_small_050"],
                                                    pretrained=True)))


from timm.models import register_model  # noqa: E402  (a model timm knows but has no weights for)


@register_model
def edgekiln_no_weights_net(pretrained=False, num_classes=10, **kwargs):
    return torch.nn.Linear(3, num_classes)


# --- epochs = "auto" with several students: rounds of auto loops, not fractions of the cap ------

def _plan(patience=4, max_epochs=100):
    from edgekiln.training.schedule import Schedule

    return Schedule(None, max_epochs=max_epochs, patience=patience)


def test_auto_rounds_start_at_one_patience_window_and_double_within_the_cap():
    assert distill.auto_round_caps(2, _plan()) == [4]
    assert distill.auto_round_caps(3, _plan()) == [4, 8]
    assert distill.auto_round_caps(5, _plan(patience=3, max_epochs=8)) == [3, 6, 8]
    assert distill.auto_round_caps(2, _plan(patience=1)) == [2]
    assert distill.auto_round_caps(1, _plan()) == []


def test_a_candidate_that_cannot_reach_the_budget_is_named_hopeless_with_its_reason():
    budget = BudgetConfig(max_drop_total=2.0)
    plateau = {"accuracy": 80.0, "round_schedule": {"stopped": "no val improvement ...", "val_history": []}}
    assert "stopped in its round on patience at 80.00% val" in distill.hopeless(plateau, 90.0, budget, _plan())
    slow = {"accuracy": 50.0, "round_schedule": {"stopped": None,
                                                 "val_history": [[1, 48.0], [2, 48.5], [3, 49.0], [4, 49.5], [5, 50.0]]}}
    assert "+0.50 points an epoch" in distill.hopeless(slow, 90.0, budget, _plan(max_epochs=20))
    assert distill.hopeless(slow, 90.0, budget, _plan(max_epochs=200)) is None  # 50 + 0.5 * 195 could get there
    within = {"accuracy": 89.0, "round_schedule": {"stopped": "patience", "val_history": []}}
    assert distill.hopeless(within, 90.0, budget, _plan()) is None


def test_a_missed_budget_names_the_closest_and_what_to_try(data):
    records = [{"name": "resnet10t_w16", "accuracy": 85.0, "schedule": {"stopped": "max_epochs = 40 reached"}},
               {"name": "mobilenetv3_small_050", "accuracy": 70.0}]
    missed = distill.missed_budget(records, 90.0, BudgetConfig(max_drop_total=1.5), _plan(max_epochs=40),
                                   len(data.train_y))
    assert missed["closest"] == "resnet10t_w16" and missed["short_by"] == 3.5
    tries = " | ".join(missed["try"])
    assert 'arch = "resnet10t_w24"' in tries and "max_epochs = 40" in tries and "max_drop_total = 5.00" in tries
    assert distill.missed_budget(records, 86.0, BudgetConfig(max_drop_total=1.5), _plan(), len(data.train_y)) is None


@pytest.fixture(scope="module")
def more_data():
    """600 digits (360 to train): enough that a student is still learning after a round;
    with 110 training images every loop plateaus after one epoch and nothing can be searched."""
    return load_dataset(DataConfig(image_size=32, max_samples=600)).for_stages()


@pytest.mark.slow  # 30 s of real training; the rounds' record is test_search_distils_each_candidate_and_records_the_rounds's
def test_an_auto_search_of_three_students_costs_at_most_twice_its_winner(more_data):
    """The done-when of issue 44: each candidate's steps in the record, and the whole search
    at most 2x the epochs its winner trained (what the winner alone would have cost: it
    trains on from its rounds' weights, on the same schedule). The bound needs a winner
    that trains at least as long as the losers' rounds (patience epochs in the first, twice
    that in the second)."""
    data = more_data
    teacher = modeling.bundle("resnet10t", modeling.create("resnet10t", 10, seed=1, image_size=32), 10, 32)
    training.fit(teacher, data, 4, lr=3e-3, seed=0, desc="teacher")
    reference = StageResult.with_model(evaluation.evaluate(teacher, data), teacher, stage="teacher")
    config = DistillSections(student=StudentConfig(arch=["resnet10t_w16", "mobilenetv3_small_050", "resnet10t_w24"],
                                       epochs="auto", max_epochs=30, select="accuracy"),
              distill=DistillConfig(), train=TrainConfig(batch_size=32, patience=2),
              budget=BudgetConfig(max_drop_total=100.0))
    result = distill.run(data, config, None, reference=reference)
    distill.refresh(result, config, reference.accuracy)  # as the runner does
    student = result.figures.student
    assert student.schedule == [2, 4]
    winner = next(c for c in student.candidates if c.chosen)
    assert all(c.steps == c.epochs_trained * 12 for c in student.candidates)  # 360 images, batch 32
    assert student.epochs_spent <= 2 * winner.epochs_trained, student.candidates
    assert winner.schedule["stopped"] and student.missed_budget is None
    dropped = [c for c in student.candidates if not c.chosen]
    assert len(dropped) == 2 and all(c.why.startswith("dropped after round") for c in dropped)


def test_survivors_trained_to_the_end_are_ranked_on_where_they_ended(data, monkeypatch):
    """Found on Fashion-MNIST (benchmarks/first_run.py): after round 1 neither student was
    within budget and w32 led; both ended within it, and the rule (smallest within budget)
    must then pick w24, not the round's leader. Training is replaced by that run's figures."""
    ended = {"resnet10t_w24": 84.89, "resnet10t_w32": 86.52}
    after_round = {"resnet10t_w24": 82.77, "resnet10t_w32": 83.02}

    def train_round(self, plan, until, data):
        self.record.update(accuracy=after_round[self.record["name"]], epochs_trained=until,
                           round_schedule={"stopped": None, "val_history": []})
        return self.record["accuracy"]

    def train_auto(self, plan, data, within_budget):
        self.record.update(accuracy=ended[self.record["name"]], epochs_trained=10,
                           schedule={"stopped": "patience"})
        return self.record["accuracy"]

    monkeypatch.setattr(distill._Candidate, "train_round", train_round)
    monkeypatch.setattr(distill._Candidate, "train_auto", train_auto)
    teacher = modeling.bundle("resnet10t", modeling.create("resnet10t", 10, seed=1, image_size=32), 10, 32)
    reference = StageResult.with_model(84.89, teacher, stage="teacher")
    config = DistillSections(student=StudentConfig(arch=["resnet10t_w24", "resnet10t_w32"], epochs="auto", select="smallest"),
              distill=DistillConfig(), train=TrainConfig(batch_size=32),
              budget=BudgetConfig(max_drop_total=1.5))
    result = distill.run(data, config, None, reference=reference)
    distill.refresh(result, config, reference.accuracy)  # as the runner does
    assert result.figures.student.name == "resnet10t_w24"
    assert result.figures.student.missed_budget is None


def test_a_run_whose_student_misses_the_budget_exits_1_naming_the_closest_and_what_to_try(run, tmp_path):
    """The shared tiny pipeline under a budget no student of it meets (its teacher is cached;
    distillation runs again under the new budget)."""
    import json

    from tiny_pipeline import invoke

    root, _, _ = run
    config = tmp_path / "tight.toml"
    config.write_text((root / "tiny.toml").read_text().replace("max_drop_total = 60.0", "max_drop_total = 0.0"))
    result = invoke(config, tmp_path / "out", root / "cache")
    assert result.exit_code == 1, result.output
    said = " ".join(result.output.split())
    assert "no student within budget: the closest, mobilenetv3_small_050" in said
    assert 'a wider student of the same family: [student] arch = "mobilenetv3_small_075"' in said
    missed = json.loads((tmp_path / "out" / "manifest.json").read_text())["student"]["missed_budget"]
    assert missed["closest"] == "mobilenetv3_small_050" and missed["short_by"] > 0
    assert any("max_drop_total =" in t for t in missed["try"])
    html = (tmp_path / "out" / "report.html").read_text()
    assert 'id="student-missed-budget"' in html and "mobilenetv3_small_075" in html
