"""`edgekiln run CONFIG --plan`: the stages, candidates, epochs and expected minutes, before any
training; nothing trained, nothing written (issue 44)."""

import textwrap

from typer.testing import CliRunner

from edgekiln.engine.config import config_from_text
from edgekiln.interfaces.cli import app
from edgekiln.stages import planning

SEARCH = """
[data]
source = "digits"
image_size = 32
max_samples = 300

[teacher]
candidates = ["resnet10t"]
epochs = "auto"
max_epochs = 40

[student]
arch = ["resnet10t_w16", "resnet10t_w24", "resnet10t_w32"]
epochs = "auto"
max_epochs = 40

[prune]
macs_ratio = 0.5
steps = 2
finetune_epochs = 3

[[targets]]
name = "server"
profile = "x86-server-avx2"
"""


def test_each_stage_plans_its_loops_and_hands_its_model_on():
    cfg = config_from_text(textwrap.dedent(SEARCH))
    from edgekiln import stages as registry
    from edgekiln.engine.config import plan_of

    model, rows = None, []
    for stage in plan_of(cfg).stages:
        works, model = registry.resolve(stage.plan)(cfg, model)
        rows += [(stage.name, w) for w in works]
    students = {w.arch: w for name, w in rows if name == "distill" and w.arch}
    # auto rounds of 4 and 8 epochs: w16 (listed first) is planned as the winner, w24 through
    # both rounds, w32 dropped after the first; auto loops expected at 4 patience windows
    assert (students["resnet10t_w16"].epochs, students["resnet10t_w16"].max_epochs) == (16, 40)
    assert students["resnet10t_w24"].epochs == 8 and students["resnet10t_w32"].epochs == 4
    prune = [w for name, w in rows if name == "prune"]
    assert [w.epochs for w in prune] == [3, 3] and prune[1].scale == 0.5 and prune[0].arch == "resnet10t_w16"
    assert any(w.seconds and "pre-check" in w.what for _, w in rows)
    assert planning.epochs_of("auto", 10, 4) == (10, 5, 10)


def test_plan_prints_stages_epochs_and_minutes_and_trains_nothing(tmp_path):
    config = tmp_path / "search.toml"
    config.write_text(textwrap.dedent(SEARCH))
    result = CliRunner().invoke(app, ["run", str(config), "--plan", "--out", str(tmp_path / "out"),
                                      "--cache-dir", str(tmp_path / "cache")], terminal_width=200)
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "teacher resnet10t" in said and "student resnet10t_w16 (the search's winner)" in said
    assert "expected:" in said and "min on this machine" in said and "Nothing was trained" in said
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()
