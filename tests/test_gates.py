from edgekiln.gates import GateCheck, checks


def test_drop_within_budget_passes_and_at_budget_passes():
    assert GateCheck("stage prune", "budget.max_drop.prune", 90.0, "distill", 91.5, 2.0).passed
    assert GateCheck("stage prune", "budget.max_drop.prune", 89.5, "distill", 91.5, 2.0).passed


def test_drop_over_budget_fails_with_a_message_naming_everything():
    gate = GateCheck("stage prune", "budget.max_drop.prune", 85.0, "distill", 91.5, 2.0)
    assert not gate.passed
    message = gate.message()
    for part in ("FAILED", "stage prune", "85.00%", "6.50 points", "distill", "budget.max_drop.prune = 2"):
        assert part in message


def test_improvement_is_a_negative_drop():
    gate = GateCheck("stage distill", "budget.max_drop.distill", 99.0, "teacher", 98.0, 0.0)
    assert gate.drop == -1.0 and gate.passed


def test_checks_adds_stage_gate_only_when_budget_set():
    only_total = checks("stage prune", 90.0, ("distill", 91.0), None, "budget.max_drop.prune", 95.0, 4.0)
    assert [g.budget_key for g in only_total] == ["budget.max_drop_total"]
    both = checks("stage prune", 90.0, ("distill", 91.0), 0.5, "budget.max_drop.prune", 95.0, 4.0)
    assert [g.passed for g in both] == [False, False]
