"""Intervals against known cases, and the gate rules that read them."""

import numpy as np
import pytest

from edgekiln.stats import accuracy_interval, clopper_pearson, paired_drop
from edgekiln.gates import GateCheck


def test_clopper_pearson_matches_published_values():
    # 95/100: the classic exact interval [0.8872, 0.9836]; 0/10: the "rule of three" case, upper 0.3085
    assert clopper_pearson(95, 100) == pytest.approx((0.88717, 0.98357), abs=1e-4)
    assert clopper_pearson(0, 10) == pytest.approx((0.0, 0.30850), abs=1e-4)
    assert clopper_pearson(10, 10)[1] == 1.0
    low, high = accuracy_interval(np.array([True] * 359 + [False]))  # 359/360, the demo's test size
    assert 98.4 < low < 99.8 and 99.99 < high <= 100.0


def test_paired_drop_known_case_all_disagreements_one_way():
    reference = np.ones(100, dtype=bool)
    model = reference.copy()
    model[:10] = False  # 10 images only the reference gets right, none the other way
    drop = paired_drop(reference, model)
    assert drop.drop == pytest.approx(10.0)
    # b = 10 of 10 discordant: Clopper-Pearson of p is [0.6915, 1], so the drop is 10 x [0.383, 1]
    assert (drop.low, drop.high) == pytest.approx((3.830, 10.0), abs=1e-3)
    assert drop.p_value == pytest.approx(2 * 0.5 ** 10)


def test_paired_drop_ignores_images_both_get_right_or_wrong():
    reference = np.array([True] * 300 + [False] * 50 + [True, False] * 5)
    model = np.array([True] * 300 + [False] * 50 + [False, True] * 5)
    drop = paired_drop(reference, model)
    assert drop.drop == 0.0 and drop.low < 0 < drop.high and drop.p_value == 1.0
    assert paired_drop(reference, reference).to_dict()["interval"] == [0.0, 0.0]


def test_paired_drop_needs_the_same_images():
    with pytest.raises(ValueError, match="equal"):
        paired_drop(np.ones(3, bool), np.ones(4, bool))


@pytest.mark.parametrize("rule, passed", [("point", True), ("strict", False), ("lenient", True)])
def test_gate_rules_read_the_interval(rule, passed):
    # drop 0.8 points, interval [-0.2, 1.9], budget 1.0
    gate = GateCheck("target t", "budget.max_drop_total", 98.2, "teacher", 99.0, 1.0, "test", (-0.2, 1.9), rule)
    assert gate.passed is passed
    assert "test accuracy" in gate.message() and "95% interval" in gate.message()


def test_lenient_gate_fails_only_a_significant_excess():
    gate = GateCheck("target t", "budget.max_drop_total", 95.0, "teacher", 99.0, 1.0, "test", (1.5, 6.0), "lenient")
    assert not gate.passed and gate.decided_on == 1.5


def test_the_smallest_drop_a_split_resolves_and_the_warning_when_the_budget_is_below_it(capsys):
    from types import SimpleNamespace

    from edgekiln.engine.runner import _warn_unresolvable
    from edgekiln.interfaces.configs import val_fraction_for
    from edgekiln.stats import images_to_resolve, smallest_resolvable_drop

    assert smallest_resolvable_drop(300) == 2.0 and images_to_resolve(1.0) == 600 and images_to_resolve(1.5) == 400
    # 6 images lost, none won: the exact McNemar test's p is under 0.05; 5 are not enough
    assert paired_drop(np.ones(600, bool), np.r_[np.zeros(6, bool), np.ones(594, bool)]).low > 0
    assert paired_drop(np.ones(600, bool), np.r_[np.zeros(5, bool), np.ones(595, bool)]).low <= 0
    # compress carves val to resolve its budget: 600 of 1,500 images for 1 point, at most half
    assert val_fraction_for(1500, 1.0) == 0.41 and val_fraction_for(500, 1.0) == 0.5
    assert val_fraction_for(5000, 1.0) is None  # the default 0.2 already resolves it
    cfg = SimpleNamespace(budget=SimpleNamespace(max_drop_total=1.0))
    data = SimpleNamespace(val_y=[0] * 300, test_y=[0] * 1000, has_test=True)
    _warn_unresolvable(cfg, data)
    said = " ".join(capsys.readouterr().out.split())
    assert "val has 300 images: the smallest drop they tell from none is 2.00 points" in said
    assert "About 600 val images would resolve it" in said and "test has" not in said
