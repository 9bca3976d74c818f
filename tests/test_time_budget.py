"""A run's time budget (`[pipeline] max_minutes`, `run --max-minutes`; issue 44): the plan's
shares become a deadline per stage, an auto loop stops at its stage's deadline after at least
one epoch keeping its best epoch, a search's rounds share what is left, and the manifest says
what the budget cut. The rules on scripted loops and clocks, then one tiny run that is cut."""

import json
import textwrap
import time

import pytest
from typer.testing import CliRunner

from edgekiln import time_budget
from edgekiln.stages.distill import work as distill
from edgekiln.training import schedule
from test_schedule import ScriptedTrainer


@pytest.fixture(autouse=True)
def no_budget_left_behind():
    yield
    time_budget.stop()


def test_each_stage_ends_by_its_cumulative_share_of_the_budget():
    minutes = time_budget.deadline_minutes(10, {"teacher": 2.0, "distill": 6.0, "export": 2.0})
    assert minutes == pytest.approx({"teacher": 2.0, "distill": 8.0, "export": 10.0})
    # a plan expecting 40 minutes squeezed into 10: the same proportions
    assert time_budget.deadline_minutes(10, {"teacher": 8, "distill": 32})["teacher"] == pytest.approx(2.0)


def test_a_stage_gets_its_share_of_what_is_left_when_it_starts():
    # 10 minutes, the plan: teacher 2, distill 6, export 2. The teacher (or the checks before
    # it) took 5 minutes: distill gets 6/8 of the 5 left, export the rest.
    budget = time_budget.start(10, {"teacher": 2.0, "distill": 6.0, "export": 2.0}, started=time.monotonic() - 300)
    deadline = budget.enter("distill")
    assert (deadline - time.monotonic()) / 60 == pytest.approx(5 * 6 / 8, abs=0.01)
    assert (budget.enter("export") - budget.started) / 60 == pytest.approx(10, abs=0.01)  # the last: the end


def test_an_auto_loop_stops_at_its_stages_deadline_after_one_epoch_keeping_its_best():
    plan = schedule.Schedule(None, max_epochs=50, patience=4)
    scores = [60, 70, 65, 64, 63, 62]
    trainer = ScriptedTrainer()
    time_budget.start(1, {"distill": 1.0}, started=time.monotonic() - 120)  # the deadline passed a minute ago
    with time_budget.stage("distill") as cuts:
        record = schedule.train_auto(trainer, plan, lambda: scores[trainer.epoch - 1])
    assert record["epochs"] == 1 and record["cut_by_time_budget"]  # one epoch: never ship an untrained model
    assert record["stopped"].startswith("time budget: pipeline.max_minutes = 1") and len(cuts) == 1
    # with time left, the same loop runs to its own rule
    time_budget.start(60, {"distill": 1.0})
    trainer = ScriptedTrainer()
    with time_budget.stage("distill") as cuts:
        record = schedule.train_auto(trainer, plan, lambda: scores[trainer.epoch - 1])
    assert record["epochs"] == 6 and not record["cut_by_time_budget"] and cuts == []
    assert trainer.model.weight.item() == 2  # the best epoch's weights


def test_outside_a_budget_or_a_stage_nothing_is_cut():
    assert time_budget.expired() is None and time_budget.progress_note() == ""
    time_budget.start(1, {"teacher": 1.0}, started=time.monotonic() - 600)
    assert time_budget.expired() is None  # no stage under way: nothing to cut
    with time_budget.stage("teacher"):
        assert time_budget.expired() is not None
        assert "run ETA 0.0 min" in time_budget.progress_note()


def test_a_portion_is_a_share_of_what_the_deadline_leaves():
    budget = time_budget.start(10, {"distill": 1.0})
    with time_budget.stage("distill"):
        outer = budget.deadline
        with time_budget.portion(4):
            left = budget.deadline - time.monotonic()
            assert left == pytest.approx((outer - time.monotonic()) / 4, rel=0.01)
        assert budget.deadline == outer


def test_a_round_cut_by_the_clock_is_not_called_a_plateau():
    from edgekiln.engine.config import BudgetConfig

    plan = schedule.Schedule(None, max_epochs=100, patience=4)
    cut = {"accuracy": 80.0, "round_schedule": {"stopped": "time budget: ...", "cut_by_time_budget": True,
                                                "val_history": [[1, 70.0], [2, 80.0]]}}
    assert distill.hopeless(cut, 90.0, BudgetConfig(max_drop_total=2.0), plan) is None


TINY = """
[data]
source = "digits"
image_size = 16
max_samples = 300

[pipeline]
max_minutes = 0.02

[teacher]
candidates = ["resnet10t_w16"]
epochs = "auto"
max_epochs = 30

[student]
arch = ["resnet10t_w16", "resnet10t_w24"]
epochs = "auto"
max_epochs = 30

[budget]
max_drop_total = 100

[[targets]]
name = "server"
profile = "x86-server-avx2"
format = "onnx"
"""


def test_a_run_over_its_budget_is_cut_and_its_manifest_says_where(tmp_path):
    from edgekiln.interfaces.cli import app

    config = tmp_path / "tiny.toml"
    config.write_text(textwrap.dedent(TINY))
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(tmp_path / "out"), "--cache-dir",
                                      str(tmp_path / "cache")], terminal_width=200)
    said = " ".join(result.output.split())
    assert "time budget: 0.02 min (pipeline.max_minutes)" in said and "expected" in said, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    budget = manifest["time_budget"]
    assert budget["max_minutes"] == 0.02 and set(budget["expected_minutes"]) >= {"teacher", "distill"}
    assert set(budget["deadline_minute"]) >= {"teacher", "distill", "export"}
    assert budget["cut"]["teacher"] and budget["cut"]["distill"] and budget["within"] is False
    teacher_loop = manifest["teacher"]["candidates"][0]["schedule"]
    # cut long before its cap (30) and its patience, after at least one epoch (how many fit before
    # the deadline depends on this machine's speed)
    assert teacher_loop["cut_by_time_budget"] and 1 <= teacher_loop["epochs"] < 5
    assert manifest["artifacts"] and result.exit_code in (0, 1), result.output
    assert "time budget:" in said and "cut by it" in said  # the summary's line
    html = (tmp_path / "out" / "report.html").read_text()
    assert 'id="time-budget"' in html and "cut by it" in html
    # --max-minutes overrides the config's; a budget is in the training stages' keys, not in export's
    again = CliRunner().invoke(app, ["run", str(config), "--out", str(tmp_path / "out2"), "--cache-dir",
                                     str(tmp_path / "cache"), "--plan", "--max-minutes", "30"], terminal_width=200)
    assert "time budget: 30 min" in " ".join(again.output.split()), again.output
