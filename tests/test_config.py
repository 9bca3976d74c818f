import textwrap

import pytest

from edgekiln.engine.config import ConfigError, load_config

BASE = """
[data]
source = "digits"
image_size = 32

[teacher]
candidates = ["resnet10t"]

[prune]
macs_ratio = 0.5

[[targets]]
name = "phone"
format = "tflite"
"""


def write(tmp_path, text):
    path = tmp_path / "p.toml"
    path.write_text(textwrap.dedent(text))
    return path


def error_of(tmp_path, text) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    return str(info.value)


def test_valid_config_gets_defaults(tmp_path):
    cfg = load_config(write(tmp_path, BASE))
    assert cfg.student.arch == "mobilenetv3_small_050"
    assert cfg.quantize.mode == "ptq"
    assert cfg.targets[0].artifact_name == "model.tflite"
    assert cfg.budget.max_drop.prune is None


def test_misspelled_key_is_named_with_its_path(tmp_path):
    message = error_of(tmp_path, BASE.replace("macs_ratio", "macs_ration"))
    assert "prune.macs_ration = 0.5 (line 10): unknown key (did you mean 'macs_ratio'?)" in message


def test_unknown_section_is_named(tmp_path):
    assert "distil (line 16): unknown key (did you mean 'distill'?)" in error_of(tmp_path, BASE + "\n[distil]\nalpha = 0.5\n")


def test_out_of_range_value_names_key(tmp_path):
    message = error_of(tmp_path, BASE.replace("macs_ratio = 0.5", "macs_ratio = 1.5"))
    assert "prune.macs_ratio = 1.5 (line 10): must be at most 1.0" in message


def test_wrong_type_names_key(tmp_path):
    assert "data.image_size" in error_of(tmp_path, BASE.replace("image_size = 32", 'image_size = "big"'))


def test_bad_target_format_names_the_target(tmp_path):
    text = BASE + '\n[[targets]]\nname = "x"\nformat = "tflit"\n'
    assert ("targets.x.format = \"tflit\" (line 18): unknown format 'tflit' (did you mean 'tflite'?)"
            in error_of(tmp_path, text))
    text = BASE + '\n[[targets]]\nformat = "onnx"\n'  # no name: named by its place
    assert "targets[1].name (line 16): is required" in error_of(tmp_path, text)


def test_duplicate_target_names_rejected(tmp_path):
    text = BASE + '\n[[targets]]\nname = "phone"\nformat = "onnx"\n'
    assert "same name 'phone'" in error_of(tmp_path, text)


def test_two_targets_same_format_need_distinct_artifacts(tmp_path):
    text = BASE + '\n[[targets]]\nname = "phone2"\nformat = "tflite"\n'
    assert "same artifact 'model.tflite'" in error_of(tmp_path, text)


def test_nested_budget_keys_validated(tmp_path):
    text = BASE + "\n[budget.max_drop]\npruning = 1.0\n"
    assert "budget.max_drop.pruning = 1.0 (line 17): unknown key (did you mean 'prune'?)" in error_of(tmp_path, text)


def test_imagefolder_needs_path(tmp_path):
    assert "path" in error_of(tmp_path, BASE.replace('source = "digits"', 'source = "imagefolder"'))


def test_teacher_table_candidate_rejects_unknown_key(tmp_path):
    text = BASE.replace('candidates = ["resnet10t"]', 'candidates = [{arch = "resnet10t", ckpt = "x"}]')
    message = error_of(tmp_path, text)
    # the name branch of the candidate's type ("must be text") is left out: a table was given
    assert "has 1 problem:" in message and "teacher.candidates[0].ckpt = \"x\" (line 6): unknown key" in message


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    assert "not valid TOML" in error_of(tmp_path, "[data\n")


def test_relative_checkpoint_path_resolves_against_config_dir(tmp_path):
    text = BASE.replace('candidates = ["resnet10t"]',
                        'candidates = [{arch = "resnet10t", checkpoint = "w/t.safetensors"}]')
    cfg = load_config(write(tmp_path, text))
    assert cfg.teacher.candidates[0].checkpoint == (tmp_path / "w" / "t.safetensors").resolve()


def test_transformers_local_directory_resolves_against_config_dir_and_hub_ids_stay(tmp_path):
    (tmp_path / "my-vit").mkdir()
    cfg = load_config(write(tmp_path, BASE.replace('["resnet10t"]', '["hf:my-vit", "hf:google/vit-base-patch16-224"]')))
    assert cfg.teacher.candidates == [f"hf:{tmp_path / 'my-vit'}", "hf:google/vit-base-patch16-224"]


def test_train_and_teacher_selection_keys_are_validated(tmp_path):
    message = error_of(tmp_path, BASE + '\n[train]\nrandaugment = "augmix-m5"\nema_decay = 1.5\n')
    assert "train.ema_decay" in message
    # The RandAugment string needs timm (torch) to parse: the run's preflight checks it.
    from edgekiln.engine.runner import preflight
    from edgekiln.errors import InputError

    cfg = load_config(write(tmp_path, BASE + '\n[train]\nrandaugment = "augmix-m5"\n'))
    with pytest.raises(InputError, match="train.randaugment: not a timm RandAugment string"):
        preflight(cfg)
    message = error_of(tmp_path, BASE.replace('candidates = ["resnet10t"]',
                                              'candidates = ["resnet10t"]\nselect = "fastest"'))
    assert "teacher.select" in message


def test_a_string_where_a_number_belongs_is_an_error_naming_the_key(tmp_path):
    message = error_of(tmp_path, BASE + '\n[student]\nepochs = "1"\n')
    assert "student.epochs" in message and "whole number of epochs" in message and "not '1'" in message
    assert "data.image_size" in error_of(tmp_path, BASE.replace("image_size = 32", 'image_size = "32"'))
    # an integer where a float belongs is a number all the same
    assert load_config(write(tmp_path, BASE + "\n[student]\nlr = 1\n")).student.lr == 1.0


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_non_finite_numbers_are_errors_naming_the_key(tmp_path, value):
    message = error_of(tmp_path, BASE + f"\n[student]\nlr = {value}\n")
    assert "student.lr (line 17): not a finite number" in message
    message = error_of(tmp_path, BASE.replace('candidates = ["resnet10t"]', f'candidates = ["resnet10t"]\nlr = {value}'))
    assert "teacher.lr" in message


def test_student_candidates_and_the_budget_gate_rule_are_validated(tmp_path):
    cfg = load_config(write(tmp_path, BASE + '\n[student]\narch = ["mobilenetv3_small_050", "mobilevit_xxs"]\n'))
    assert cfg.student.candidates == ["mobilenetv3_small_050", "mobilevit_xxs"]
    assert "budget.gate" in error_of(tmp_path, BASE + '\n[budget]\ngate = "sometimes"\n')
    assert "data.test_fraction" in error_of(tmp_path, BASE.replace("image_size = 32", "test_fraction = 1.5"))


def test_validate_checks_a_config_without_importing_torch(tmp_path):
    """`edgekiln validate` answers from the schema alone: the process never imports torch or
    a converter (its time is in BENCHMARKS.md: well under 2 s)."""
    import subprocess
    import sys

    probe = ("import sys\nfrom edgekiln.interfaces.cli import app\nfrom typer.testing import CliRunner\n"
             "r = CliRunner().invoke(app, ['validate', sys.argv[1]])\n"
             "heavy = [m for m in ('torch', 'timm', 'onnx', 'coremltools', 'litert_torch', 'executorch') if m in sys.modules]\n"
             "print(r.exit_code, heavy)\nprint(r.output)\n")
    good = write(tmp_path, BASE)
    done = subprocess.run([sys.executable, "-c", probe, str(good)], capture_output=True, text=True)
    assert done.stdout.splitlines()[0] == "0 []", done.stdout + done.stderr
    assert "is valid" in done.stdout and "checked when the run starts" in done.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(BASE + '\n[quantize]\ncalibration_path = "no-such-folder"\n')
    done = subprocess.run([sys.executable, "-c", probe, str(bad)], capture_output=True, text=True)
    assert done.stdout.splitlines()[0] == "2 []", done.stdout + done.stderr
    said = " ".join(done.stdout.split())
    assert "quantize.calibration_path" in said and "no-such-folder does not exist" in said


def test_format_names_come_from_the_registry(tmp_path):
    from edgekiln.targets import format_names

    assert set(format_names()) >= {"onnx", "tflite", "coreml", "executorch"}
    message = error_of(tmp_path, BASE + '\n[[targets]]\nname = "x"\nformat = "tensorrt"\n')
    assert "unknown format 'tensorrt'; known: " in message and "executorch" in message


def test_every_problem_is_reported_at_once_with_its_line_value_and_a_close_name(tmp_path):
    """Four mistakes, one of them a profile (checked after the schema), come in one message, in
    the file's order."""
    text = (BASE.replace('candidates = ["resnet10t"]', 'candidates = ["resnet10t"]\nepochs = "six"')
            .replace('format = "tflite"', 'profile = "pixel3-cpu"')
            + '\n[distill]\ntemprature = 4.0\n\n[quantize]\nmode = "pqt"\n')
    message = error_of(tmp_path, text)
    lines = message.splitlines()
    assert lines[0].endswith("has 4 problems:"), message
    assert lines[1].startswith('  teacher.epochs = "six" (line 8): must be "auto" or a whole number')
    assert lines[2].startswith('  targets.phone.profile = "pixel3-cpu" (line 15): unknown profile '
                               "'pixel3-cpu' (did you mean 'pixel-3-cpu'?)")
    assert lines[3] == "  distill.temprature = 4.0 (line 18): unknown key (did you mean 'temperature'?)"
    assert lines[4] == "  quantize.mode = \"pqt\" (line 21): must be 'ptq' or 'qat' (did you mean 'ptq'?)"


def test_a_plan_problem_comes_with_the_other_keys_problems(tmp_path):
    message = error_of(tmp_path, BASE.replace("image_size = 32", 'image_size = "32"')
                       + '\n[pipeline]\nstages = ["distil", "export"]\n')
    assert "has 2 problems" in message and 'data.image_size = "32" (line 4): must be a whole number' in message
    assert "pipeline.stages (line 17): unknown stage 'distil' (did you mean 'distill'?)" in message


def test_toml_lines_find_keys_in_arrays_of_tables_sub_tables_and_after_multiline_strings():
    from edgekiln.engine.config_problems import key_lines

    text = textwrap.dedent('''\
        [card]
        description = """
        x = 1
        """
        [[targets]]
        name = "a"
        [[targets]]
        name = "b"
        "profile" = "p"
        [targets.budget]
        p50_ms = 3
        runner.kind = "adb"
        ''')
    raw = {"targets": [{"name": "a"}, {"name": "b"}]}
    lines = key_lines(text, raw)
    assert lines["card.description"] == 2 and "card.x" not in lines
    assert lines["targets.a"] == 5 and lines["targets.b.profile"] == 9
    assert lines["targets.b.budget.p50_ms"] == 11 and lines["targets.b.budget.runner.kind"] == 12


def test_preflight_names_every_stage_problem_and_a_close_architecture(tmp_path):
    from edgekiln.engine.runner import preflight
    from edgekiln.errors import InputError

    cfg = load_config(write(tmp_path, BASE.replace('"resnet10t"', '"resnet10tt"')
                            + '\n[student]\narch = "mobilenetv3_small_05"\n'))
    with pytest.raises(InputError) as e:
        preflight(cfg)
    message = str(e.value)
    assert message.startswith("2 problems, found before any work")
    assert "teacher.candidates[0]: unknown timm architecture 'resnet10tt' (did you mean 'resnet10t'?)" in message
    assert ("student.arch: unknown timm architecture 'mobilenetv3_small_05' (did you mean 'mobilenetv3_small_050'?)"
            in message)


def test_a_folder_given_as_the_config_names_what_to_give_instead(tmp_path):
    from typer.testing import CliRunner

    from edgekiln.interfaces.cli import app

    (tmp_path / "a.toml").write_text("")
    said = " ".join(CliRunner().invoke(app, ["run", str(tmp_path)]).output.split())
    assert "is a folder, not a config file: it holds a.toml: give one of them" in said
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "manifest.json").write_text("{}")
    result = CliRunner().invoke(app, ["run", str(tmp_path / "out")])
    assert result.exit_code == 2 and "it is a run's output folder" in " ".join(result.output.split())


def test_a_target_whose_format_is_not_installed_names_the_extra_to_install(tmp_path, monkeypatch):
    """`pip install edgekiln` has no converter; a target of a format whose extra is missing is
    refused before any work, naming the pip extra (here litert-torch stands missing)."""
    from edgekiln.targets import get_format

    tflite = get_format("tflite")
    monkeypatch.setattr(type(tflite), "TOOLS", {**tflite.TOOLS, "litert_torch_missing": "litert-torch"})
    message = error_of(tmp_path, BASE + '\n[[targets]]\nname = "server"\nprofile = "x86-server-avx2"\n')
    assert ("targets.phone.format = \"tflite\" (line 14): tflite artifacts need litert-torch, not installed here: "
            "pip install 'edgekiln[tflite]'") in message
    assert "server" not in message  # ONNX is installed
    monkeypatch.setattr(type(tflite), "RUNTIME_MODULE", "litert_torch_missing.interpreter")
    assert tflite.runtime_unavailable() == ("the ai-edge-litert runtime needs litert-torch, not installed here: "
                                            "pip install 'edgekiln[tflite]'")
