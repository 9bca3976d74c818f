"""Pruning in steps to a MACs or latency target, backing off a step that breaks the budget."""

import pytest
from pydantic import ValidationError

from edgekiln.data.dataset import DataConfig, load_dataset
from edgekiln.engine.config import BudgetConfig
from edgekiln.errors import InputError
from edgekiln.stages.prune import work as prune
from edgekiln.stages.result import StageResult
from edgekiln.targets.cost import cost_features
from edgekiln.targets.runners import estimate
from edgekiln.training import evaluation, modeling
from edgekiln.training.config import DistillConfig, TrainConfig
from edgekiln.stages.prune import PruneSections


@pytest.fixture(scope="module")
def data():
    return load_dataset(DataConfig(image_size=32, seed=0))


def inputs(data, distilled=90.0, teacher=95.0):
    def bundle():
        model = modeling.create("mobilenetv3_small_050", data.num_classes, seed=0)
        return modeling.bundle("mobilenetv3_small_050", model, data.num_classes, data.image_size)

    return {"previous": StageResult.with_model(distilled, bundle(), stage="distill"),
            "reference": StageResult.with_models(teacher, [bundle()], stage="teacher")}


def config(prune_cfg, budget):
    return PruneSections(prune=prune_cfg, distill=DistillConfig(), train=TrainConfig(),
            budget=budget)


def scripted_accuracies(monkeypatch, values):
    it = iter(values)
    monkeypatch.setattr(evaluation, "evaluate", lambda bundle, data: next(it))


def test_a_step_that_breaks_the_budget_is_undone_and_pruning_stops_at_the_last_good_step(data, monkeypatch, tmp_path):
    scripted_accuracies(monkeypatch, [85.0, 80.0, 70.0])  # step 3 loses 20 points against distill
    budget = BudgetConfig(max_drop_total=50.0, max_drop={"prune": 15.0})
    cfg = prune.PruneConfig(macs_ratio=0.4, steps=3, finetune_epochs=0)
    result = prune.run(data, config(cfg, budget), tmp_path, **inputs(data))
    steps = result.figures.steps
    assert [s.step for s in steps] == [0, 1, 2, 3]
    assert steps[0].macs > steps[1].macs > steps[2].macs > steps[3].macs
    assert steps[3].note.startswith("undone: 20.00 points below distill > budget.max_drop.prune = 15")
    assert result.figures.stopped.startswith("backed off to step 2")
    assert result.accuracy == 80.0 and result.macs == steps[2].macs
    assert modeling.macs(result.bundle.model, data.image_size) == steps[2].macs  # the model is step 2's


def test_a_first_step_that_breaks_the_budget_backs_off_to_the_distilled_student(data, monkeypatch, tmp_path):
    scripted_accuracies(monkeypatch, [70.0])  # step 1 already loses 20 points against distill
    budget = BudgetConfig(max_drop_total=50.0, max_drop={"prune": 15.0})
    cfg = prune.PruneConfig(macs_ratio=0.4, steps=2, finetune_epochs=0)
    distilled = inputs(data)
    macs_before = modeling.macs(distilled["previous"].bundle.model, data.image_size)
    result = prune.run(data, config(cfg, budget), tmp_path, **distilled)
    steps = result.figures.steps
    assert [s.step for s in steps] == [0, 1] and steps[1].note.startswith("undone: 20.00 points below")
    assert result.figures.stopped.startswith("backed off to the distilled student (no pruning)")
    assert result.accuracy == 90.0 and result.figures.macs_ratio == 1.0
    assert modeling.macs(result.bundle.model, data.image_size) == macs_before  # unpruned


def test_pruning_to_an_estimated_latency_stops_at_the_target(data, monkeypatch, tmp_path):
    scripted_accuracies(monkeypatch, [88.0, 88.0])
    start = estimate.ProfileEstimator("x86-server-avx2", data.image_size)(inputs(data)["previous"].bundle.model)
    cfg = prune.PruneConfig(latency_ms=0.95 * start, profile="x86-server-avx2", steps=2, finetune_epochs=0,
                            importance="taylor")
    result = prune.run(data, config(cfg, BudgetConfig(max_drop_total=50.0)), tmp_path, **inputs(data))
    steps = result.figures.steps
    assert [s.latency_source for s in steps] == ["estimate"] * 3
    assert steps[0].latency_ms > steps[1].latency_ms > steps[2].latency_ms
    assert steps[1].latency_ms <= 0.975 * start + 1e-9  # half-way goal after step 1
    assert steps[2].latency_ms <= 0.95 * start + 1e-9 and result.figures.stopped == "reached the latency target"


def test_a_latency_below_the_runtimes_fixed_cost_is_reported_unreachable(data, monkeypatch, tmp_path):
    # The x86 cost model has a fixed per-inference cost (about 0.48 ms): no pruning gets below it.
    scripted_accuracies(monkeypatch, [88.0])
    cfg = prune.PruneConfig(latency_ms=0.1, profile="x86-server-avx2", finetune_epochs=0)
    result = prune.run(data, config(cfg, BudgetConfig(max_drop_total=50.0)), tmp_path, **inputs(data))
    assert result.figures.stopped == "stopped at step 1: the target cannot be reached (no layer can give up more)"
    assert result.figures.steps[1].latency_ms > 0.1


def fake_runner(monkeypatch, fixed_ms=0.2, ms_per_mmac=0.5):
    """The host runner replaced by a latency of a fixed cost plus a share per MAC (pruning
    lowers only the second), after checking it was handed a real INT8 ONNX artifact."""
    import onnx

    from edgekiln.targets import runners

    timed = []

    def measure(path, profile, features, precision, allow_estimate=False):
        ops = {n.op_type for n in onnx.load(str(path)).graph.node}
        assert precision == "int8" and "QuantizeLinear" in ops
        timed.append(fixed_ms + ms_per_mmac * features.macs / 1e6)
        return runners.Measurement(source="host", runner="host", device="fake", tool="fake",
                                   latency_ms={"p50": timed[-1]}, peak_memory_mb=None)

    monkeypatch.setattr(runners, "measure", measure)
    return timed


def test_pruning_to_a_measured_latency_prunes_until_the_runner_says_so(data, monkeypatch, tmp_path):
    scripted_accuracies(monkeypatch, [88.0, 88.0])
    timed = fake_runner(monkeypatch)
    start = 0.2 + 0.5 * cost_features(inputs(data)["previous"].bundle.model, data.image_size).macs / 1e6
    target = 0.2 + 0.6 * (start - 0.2)  # 40% of the MAC-bound part: a fixed cost keeps one round short
    cfg = prune.PruneConfig(latency_ms=target, profile="x86-server-avx2", measure=True, steps=2, finetune_epochs=0)
    result = prune.run(data, config(cfg, BudgetConfig(max_drop_total=50.0)), tmp_path, **inputs(data))
    steps = result.figures.steps
    assert [s.latency_source for s in steps] == ["host"] * 3
    assert steps[0].latency_ms == pytest.approx(start)
    assert steps[1].latency_ms <= start - 0.5 * (start - target) + 1e-9  # half-way goal after step 1
    assert steps[2].latency_ms <= target and result.figures.stopped == "reached the latency target"
    assert all(s.latency_ms in timed for s in steps)  # every recorded figure is one the runner gave
    assert len(timed) > 3  # more than one measurement per step: the search measured as it went
    assert result.figures.target == {"latency_ms": target, "profile": "x86-server-avx2", "measured": True}
    assert list(tmp_path.iterdir()) == []  # the timed artifacts are not left behind


@pytest.mark.slow  # slow: pruning to a measured latency stays in the default suite
def test_a_measured_goal_missed_after_its_rounds_goes_on_to_the_next_step_and_the_last_miss_stops(
        data, monkeypatch, tmp_path):
    scripted_accuracies(monkeypatch, [88.0, 88.0])
    timed = fake_runner(monkeypatch, fixed_ms=0.2, ms_per_mmac=0.0)  # all fixed cost: MACs do not matter
    cfg = prune.PruneConfig(latency_ms=0.1, profile="x86-server-avx2", measure=True, steps=2, finetune_epochs=0)
    result = prune.run(data, config(cfg, BudgetConfig(max_drop_total=50.0)), tmp_path, **inputs(data))
    steps = result.figures.steps
    assert steps[1].note == (f"target not reached: still 0.200 ms measured against 0.150 "
                                f"after {prune._MEASURE_ROUNDS} rounds of pruning and measuring")
    assert steps[2].note.startswith("target not reached: still 0.200 ms measured against 0.100")
    assert steps[0].macs > steps[1].macs > steps[2].macs  # step 2 went on pruning from step 1
    assert len(timed) == 2 * prune._MEASURE_ROUNDS + 1  # the start, then one per round
    assert result.figures.stopped.startswith("stopped at step 2: the target cannot be reached (still 0.200 ms")


def test_pruning_to_a_measured_latency_times_each_step_on_the_host(data, monkeypatch, tmp_path):
    scripted_accuracies(monkeypatch, [88.0])
    cfg = prune.PruneConfig(latency_ms=0.001, profile="x86-server-avx2", measure=True, finetune_epochs=0)
    result = prune.run(data, config(cfg, BudgetConfig(max_drop_total=50.0)), tmp_path, **inputs(data))
    steps = result.figures.steps
    assert [s.latency_source for s in steps] == ["host", "host"]
    assert all(s.latency_ms > 0.001 for s in steps) and steps[1].macs < steps[0].macs
    # 1 µs is below any runtime's fixed cost: pruning goes on until the runner or the model gives out
    assert result.figures.stopped.startswith("stopped at step 1: the target cannot be reached (")
    assert steps[1].note.startswith("target not reached: ")


def test_prune_targets_are_validated():
    with pytest.raises(ValidationError, match="macs_ratio or latency_ms, not both"):
        prune.PruneConfig(macs_ratio=0.5, latency_ms=3.0, profile="pixel-3-cpu")
    with pytest.raises(ValidationError, match="latency_ms and profile go together"):
        prune.PruneConfig(latency_ms=3.0)
    assert prune.PruneConfig().macs_ratio == 0.5
    with pytest.raises(InputError, match="raspberry-pi-5-cpu' has no \\[estimate\\] reference table"):
        prune.preflight(PruneSections(prune=prune.PruneConfig(latency_ms=3.0, profile="raspberry-pi-5-cpu")))
    with pytest.raises(ValidationError, match="measure needs a latency target"):
        prune.PruneConfig(macs_ratio=0.5, measure=True)
    with pytest.raises(InputError, match="prune.measure: profile 'iphone-15-pro-ane' has no runner that measures"):
        prune.preflight(PruneSections(prune=prune.PruneConfig(latency_ms=3.0, profile="iphone-15-pro-ane", measure=True)))
    prune.preflight(PruneSections(prune=prune.PruneConfig(latency_ms=3.0, profile="raspberry-pi-5-cpu", measure=True)))
    with pytest.raises(InputError, match="prune.profile: unknown profile"):
        prune.preflight(PruneSections(prune=prune.PruneConfig(latency_ms=3.0, profile="nope")))
