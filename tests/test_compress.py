"""Starting from the model you have: `edgekiln compress` on a checkpoint written by plain
timm + safetensors (examples/compress/train_your_model.py, no edgekiln), `[model]` with
`[pipeline] stages`, the skipped stages in every report, and the bad checkpoints and plans
that stop a run before any work."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from edgekiln.interfaces.cli import app

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "compress"))
import train_your_model as yours  # noqa: E402

BUDGET = 2.0


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A resnet10t trained on the digits' train folder by the example's plain training loop, at
    32 px with mean/std 0.5 (as many training scripts normalize; not timm's defaults)."""
    root = tmp_path_factory.mktemp("yours")
    weights = yours.main(["--out", str(root), "--arch", "resnet10t", "--epochs", "3", "--mean", "0.5", "--std", "0.5"])
    return root, weights


def _compress(root, weights, out, *extra):
    return cli("compress", "--arch", "resnet10t", "--weights", weights, "--data", root / "digits" / "train",
               "--test-data", root / "digits" / "test", "--image-size", 32, "--mean", 0.5, "--std", "0.5,0.5,0.5",
               "--budget", BUDGET, "--out", out,
               "--cache-dir", root / "cache", *extra)


@pytest.fixture(scope="module")
def compressed(trained):
    root, weights = trained
    out = root / "out"
    result = _compress(root, weights, out, "--target", "x86-server-avx2", "--target", "pixel-6-cpu",
                       "--allow-estimate")
    return root, out, result


def test_compress_quantizes_and_exports_your_model_without_training_a_teacher_or_student(compressed):
    root, out, result = compressed
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["plan"]["stages"] == ["given", "quantize", "export"]
    assert manifest["plan"]["reference_title"] == "the given model"
    skipped = {s["stage"]: s["why"] for s in manifest["plan"]["skipped"]}
    assert skipped == {"teacher": "the run starts from the given model ([model])",
                       "distill": "not in pipeline.stages", "prune": "not in pipeline.stages"}
    assert manifest["teacher"] is None and manifest["student"] is None and manifest["prune"] is None
    assert [s["name"] for s in manifest["stages"]] == ["given", "quantize", "export"]
    given = manifest["model"]
    assert given["arch"] == "resnet10t" and given["fine_tuned"] is None and len(given["checkpoint_sha256"]) == 64
    assert given["test_accuracy"] > 90  # the example's model is a real one
    assert given["mean"] == [0.5] * 3 and given["preprocessing_from"]["mean"] == "[model] mean"  # written by compress into OUT/config.toml
    assert manifest["preprocessing_check"]["verdict"] == "as configured"
    assert manifest["preprocessing"]["mean"] == [0.5] * 3  # what the app is told to feed
    assert {a["target"] for a in manifest["artifacts"]} == {"x86-server-avx2", "pixel-6-cpu"}
    for artifact in manifest["artifacts"]:
        # ONNX states the mean/std an app applies; TFLite's app interface takes (pixel - 127.5) / 127.5
        # and folds the model's own normalization inside (its test accuracy in its runtime shows it)
        assert artifact["interface"]["input"].get("mean", [0.5] * 3) == [0.5] * 3
        assert artifact["test_accuracy"] >= given["test_accuracy"] - BUDGET
        totals = [g for g in artifact["gates"] if g["budget_key"] == "budget.max_drop_total"]
        assert totals and totals[0]["reference_name"] == "the given model" and totals[0]["split"] == "test"
    assert "the given model" in result.output and "skipped: distill" in result.output
    assert "skipped: teacher" not in result.output  # the other way in: no news (report.html lists it)
    html = (out / "report.html").read_text()
    assert "drop vs the given model" in html and "skipped: distill" in html and 'id="given-model"' in html
    card = (out / "MODEL_CARD.md").read_text()
    assert "Stages: given → quantize → export" in card and "| given model | `resnet10t@" not in card
    assert "given model" in card and "student" not in card.lower().split("## artifacts")[0]


def test_compress_without_the_model_s_preprocessing_is_refused_before_any_stage(trained, tmp_path):
    """The model trained at 32 px with mean/std 0.5, given without --image-size, --mean and
    --std: timm's 176 px and ImageNet statistics put it at chance, which every artifact would
    have matched. The check names what it was trained with instead."""
    root, weights = trained
    result = cli("compress", "--arch", "resnet10t", "--weights", weights, "--data", root / "digits" / "train",
                 "--test-data", root / "digits" / "test", "--target", "x86-server-avx2", "--out", tmp_path / "out",
                 "--cache-dir", tmp_path / "cache")
    said = " ".join(result.stderr.split())
    assert result.exit_code == 2, result.output
    assert "at 32 px with mean 0.5 / std 0.5" in said and "pass --image-size 32 --mean 0.5 --std 0.5" in said
    assert "as configured, 176 px with ImageNet mean/std" in said
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["stages"] == [] and manifest["artifacts"] == []


def test_a_model_whose_outputs_are_in_another_class_order_is_refused_naming_the_order(trained, tmp_path):
    """The same trained model with its classifier's rows reversed: output 0 is the digit 9.
    Sorted folder order would ship it green at a few percent; compress refuses before any
    stage, naming the order, and passes once --classes gives it."""
    from safetensors.torch import load_file, save_file

    root, weights = trained
    state = load_file(str(weights))
    head = [k for k in state if k.startswith(("fc.", "head.fc.")) or k.endswith("classifier.weight")]
    for key in head:
        state[key] = state[key].flip(0).contiguous()
    permuted = tmp_path / "permuted.safetensors"
    save_file(state, str(permuted))

    def compress(out, *extra):
        return cli("compress", "--arch", "resnet10t", "--weights", permuted, "--data", root / "digits" / "train",
                   "--test-data", root / "digits" / "test", "--image-size", 32, "--mean", 0.5, "--std", 0.5,
                   "--target", "x86-server-avx2", "--budget", BUDGET, "--out", out, "--cache-dir", tmp_path / "cache",
                   *extra)

    refused = compress(tmp_path / "out")
    said = " ".join(refused.stderr.split())
    order = ",".join(str(d) for d in range(9, -1, -1))
    assert refused.exit_code == 2, refused.output
    assert "label order:" in said and f"Pass --classes {order} to compress" in said and "output 0 is '9'" in said
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["artifacts"] == []
    (tmp_path / "order.txt").write_text("\n".join(order.split(",")) + "\n")  # a file, one name per line
    passed = compress(tmp_path / "out2", "--classes", tmp_path / "order.txt")
    assert passed.exit_code == 0, passed.output
    manifest = json.loads((tmp_path / "out2" / "manifest.json").read_text())
    assert manifest["labels"] == order.split(",") and manifest["model"]["test_accuracy"] > 90
    assert manifest["preprocessing_check"]["label_order"]["permuted"] is False


def test_the_label_order_check_names_only_an_order_that_makes_a_working_classifier():
    from edgekiln.errors import InputError
    from edgekiln.stages.given.precheck import label_order

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 400)
    swapped = np.array([1, 0, 2, 3])[labels]  # outputs 0 and 1 swapped, otherwise right
    with pytest.raises(InputError, match=r"output 0 is 'b' \(the data's 'a'\).* Pass --classes b,a,c,d "):
        label_order(swapped, labels, ["a", "b", "c", "d"], "sorted")
    noise = rng.integers(0, 4, 400)  # no order makes noise a classifier: not refused
    assert label_order(noise, labels, ["a", "b", "c", "d"], "sorted")["best_order"] < 40
    assert label_order(labels, labels, ["a", "b", "c", "d"], "sorted") == {
        "as_numbered": 100.0, "best_order": 100.0, "permuted": False}
    assert cli("compress", "--arch", "resnet10t", "--weights", "w.safetensors", "--data", ".", "--target",
               "x86-server-avx2", "--classes", "a,a,b").exit_code == 2


def test_the_class_order_a_checkpoint_records_is_used_when_it_names_the_folders(tmp_path):
    from edgekiln.interfaces.configs import recorded_classes

    for name in ("cat", "dog", "owl"):
        (tmp_path / "data" / name).mkdir(parents=True)
    weights = tmp_path / "model" / "w.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"")
    assert recorded_classes(weights, tmp_path / "data") is None  # nothing recorded: sorted folders
    (weights.parent / "config.json").write_text(json.dumps({"pretrained_cfg": {"label_names": ["owl", "cat", "dog"]}}))
    assert recorded_classes(weights, tmp_path / "data") == ["owl", "cat", "dog"]
    (weights.parent / "config.json").write_text(json.dumps({"label_names": ["owl", "cat", "fox"]}))
    assert recorded_classes(weights, tmp_path / "data") is None  # other classes: not this data's order


def test_the_written_config_reproduces_the_run(compressed):
    root, out, _ = compressed
    config = out / "config.toml"
    assert "[model]" in config.read_text() and "resnet10t.safetensors" in config.read_text()
    before = {a["target"]: a["sha256"] for a in json.loads((out / "manifest.json").read_text())["artifacts"]}
    again = cli("run", config, "--out", out, "--cache-dir", root / "cache")
    assert again.exit_code == 0, again.output
    assert again.output.count("(cached)") == 3
    after = json.loads((out / "manifest.json").read_text())
    assert {a["target"]: a["sha256"] for a in after["artifacts"]} == before
    assert config.is_file()  # kept by the new output: it can be re-run again


def test_the_written_config_holds_paths_relative_to_itself_and_runs_from_a_moved_checkout(compressed, tmp_path):
    """A repo that commits OUT/config.toml with its data and weights runs it in any checkout."""
    import shutil
    import tomllib

    root, out, _ = compressed
    written = tomllib.loads((out / "config.toml").read_text())
    assert written["data"]["path"] == "../digits/train" and written["data"]["test_path"] == "../digits/test"
    assert written["model"]["checkpoint"] == "../resnet10t.safetensors"
    moved = tmp_path / "checkout"
    shutil.copytree(root / "digits", moved / "digits")
    shutil.copy(root / "resnet10t.safetensors", moved)
    shutil.copytree(out, moved / "out")
    again = cli("run", moved / "out" / "config.toml", "--out", moved / "out", "--cache-dir", root / "cache")
    assert again.exit_code == 0, again.output
    assert again.output.count("(cached)") == 3  # the same data and weights, elsewhere: the same keys
    manifest = json.loads((moved / "out" / "manifest.json").read_text())
    assert manifest["config"]["data"]["path"] == str(moved / "digits" / "train")


def test_a_changed_checkpoint_re_runs_every_stage_after_it(trained, tmp_path):
    root, weights = trained
    from safetensors.torch import load_file, save_file

    state = load_file(str(weights))
    state["fc.bias"] = state["fc.bias"] + 0.01
    changed = tmp_path / "changed.safetensors"
    save_file(state, str(changed))
    result = _compress(root, changed, tmp_path / "out", "--target", "x86-server-avx2")
    assert result.exit_code == 0, result.output
    assert "(cached)" not in result.output


def test_prune_recovers_by_self_distillation_from_your_model(trained, compressed, tmp_path):
    root, weights = trained
    result = _compress(root, weights, tmp_path / "out", "--target", "x86-server-avx2", "--prune", 0.7)
    assert result.exit_code in (0, 1), result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["plan"]["stages"] == ["given", "prune", "quantize", "export"]
    prune = manifest["prune"]
    assert prune["self_distillation"] is True and prune["recovery_distils_from"] == "given"
    kept = next(s for s in reversed(prune["steps"]) if not s["note"].startswith("undone"))
    assert kept["macs"] <= 0.72 * prune["steps"][0]["macs"] or "backed off" in prune["stopped"]
    config = (tmp_path / "out" / "config.toml").read_text()
    assert 'stages = [\n    "prune",' in config and "macs_ratio = 0.7" in config
    from edgekiln.interfaces import api  # diff names the change of plan among the upstream changes

    changes = {c.metric: (c.base, c.new) for c in api.diff(compressed[1], tmp_path / "out").lineage}
    assert changes["stages"] == ("given → quantize → export", "given → prune → quantize → export")


def _config(tmp_path, model: str, stages: str = '["quantize", "export"]', extra: str = "") -> Path:
    path = tmp_path / "c.toml"
    path.write_text(f'[data]\nsource = "digits"\nimage_size = 32\n\n[model]\n{model}\n\n[pipeline]\nstages = {stages}\n'
                    f'{extra}\n[[targets]]\nname = "server"\nprofile = "x86-server-avx2"\n')
    return path


@pytest.mark.parametrize("stages, message", [
    ('["export", "quantize"]', "out of order"),
    ('["quantise", "export"]', "unknown stage 'quantise'"),
    ('["export"]', "export needs quantize directly before it"),
    ('["quantize"]', "must include export"),
    ('["teacher", "quantize", "export"]', "lists teacher, which needs [teacher] (this config starts from [model])"),
    ('["quantize", "quantize", "export"]', "'quantize' is listed twice"),
])
def test_a_stage_list_that_cannot_run_is_refused_by_validate(tmp_path, stages, message):
    (tmp_path / "w.safetensors").write_bytes(b"")
    result = cli("validate", _config(tmp_path, 'arch = "resnet10t"\ncheckpoint = "w.safetensors"', stages))
    assert result.exit_code == 2 and message in " ".join(result.stderr.split()), result.output


def test_model_and_teacher_together_and_a_timm_name_without_weights_are_refused(tmp_path):
    result = cli("validate", _config(tmp_path, 'arch = "hf-hub:timm/resnet10t.a1_in1k"',
                                     extra='[teacher]\ncandidates = ["resnet10t"]\n'))
    assert result.exit_code == 2 and "gives both [model] and [teacher]" in " ".join(result.stderr.split())
    result = cli("validate", _config(tmp_path, 'arch = "resnet10t"'))
    assert result.exit_code == 2 and "give `checkpoint`" in result.stderr


def _bad_run(tmp_path, weights: Path):
    config = _config(tmp_path, f'arch = "resnet10t"\ncheckpoint = "{weights}"')
    result = cli("run", config, "--out", tmp_path / "out", "--cache-dir", tmp_path / "cache")
    entries = [p for p in (tmp_path / "cache").glob("*/*") if p.is_dir()] if (tmp_path / "cache").exists() else []
    return result, " ".join(result.stderr.split()), entries


def test_a_checkpoint_of_another_architecture_stops_before_any_work(tmp_path):
    import timm
    from safetensors.torch import save_file

    save_file(timm.create_model("mobilenetv3_small_050", num_classes=10).state_dict(), str(tmp_path / "w.safetensors"))
    result, output, entries = _bad_run(tmp_path, tmp_path / "w.safetensors")
    assert result.exit_code == 2, output
    assert "does not fit resnet10t" in output and "missing keys (first: ['conv1.0.weight'" in output
    assert entries == [] and not (tmp_path / "out" / "model.onnx").exists()


def test_a_checkpoint_for_another_class_count_names_both_counts(tmp_path):
    import timm
    from safetensors.torch import save_file

    save_file(timm.create_model("resnet10t", num_classes=5).state_dict(), str(tmp_path / "w.safetensors"))
    result, output, entries = _bad_run(tmp_path, tmp_path / "w.safetensors")
    assert result.exit_code == 2, output
    assert "its classifier (fc.weight) has 5 outputs but the data has 10 classes" in output
    assert not [e for e in entries if e.parent.name != "given"]  # no stage after it ran


def test_torch_checkpoints_load_with_weights_only_and_without_a_wrapper_prefix(tmp_path):
    import timm

    from edgekiln.training import modeling

    model = timm.create_model("resnet10t", num_classes=10)
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}
    torch.save(wrapped, tmp_path / "w.pth")
    fresh = timm.create_model("resnet10t", num_classes=10)
    modeling.load_exact(fresh, tmp_path / "w.pth", "resnet10t")
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
    torch.save({"model": model, "note": "a pickled module"}, tmp_path / "pickled.pt")
    with pytest.raises(Exception, match="holds pickled Python objects beyond tensors .*ResNet"):  # weights_only
        modeling.read_state_dict(tmp_path / "pickled.pt")


def test_compress_refuses_incomplete_flags(tmp_path):
    result = cli("compress", "--arch", "resnet10t", "--data", tmp_path, "--target", "x86-server-avx2")
    assert result.exit_code == 2 and "needs --weights" in result.stderr
    result = cli("compress", "--model", "resnet10t", "--data", tmp_path, "--target", "x86-server-avx2")
    assert result.exit_code == 2 and "hf:<local dir or hub id>" in result.stderr
    result = cli("compress", "--arch", "resnet10t", "--weights", tmp_path / "w.pt", "--data", tmp_path,
                 "--target", "pixel-9-npu")
    assert result.exit_code == 2 and "--target pixel-9-npu" in result.stderr


def test_the_full_dag_from_your_model_distils_from_it():
    from edgekiln import stages
    from edgekiln.engine.config import config_from_text, plan_of

    cfg = config_from_text('[data]\nsource = "digits"\n[model]\narch = "hf:some-org/vit"\n'
                           '[[targets]]\nname = "s"\nprofile = "x86-server-avx2"\n')
    plan = plan_of(cfg)
    assert plan.names == ["given", "distill", "prune", "quantize", "export"] and plan.reference.name == "given"
    assert stages.inputs_of(stages.stage_named("distill"), plan) == {"reference": "given"}
    assert stages.inputs_of(stages.stage_named("prune"), plan) == {"previous": "distill", "reference": "given"}


def test_init_writes_a_starter_config_that_validates(trained, tmp_path):
    root, _ = trained
    out = tmp_path / "edgekiln.toml"
    result = cli("init", root / "digits" / "train", "--out", out)
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "10 classes: 0, 1, 2" in text and "image_size = 32" in text
    assert 'profile = "android-midrange-cpu"' in text  # a phone whose estimates decide its budgets
    checked = cli("validate", out)
    assert checked.exit_code == 0, checked.output
    assert "stages: teacher → distill → prune → quantize → export" in checked.output
    again = cli("init", root / "digits" / "train", "--out", out)
    assert again.exit_code == 2 and "exists" in again.stderr


def test_profile_ls_lists_shipped_and_user_profiles(tmp_path, monkeypatch):
    (tmp_path / "my-phone.toml").write_text(
        'name = "my-phone"\ndevice = "my phone"\nformat = "tflite"\n[runner]\nkind = "adb"\n[budget]\np50_ms = 7\n')
    (tmp_path / "broken.toml").write_text("name = ")
    monkeypatch.setenv("EDGEKILN_PROFILE_PATH", str(tmp_path))
    result = CliRunner().invoke(app, ["profile", "ls"], terminal_width=300)
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.startswith("│")}
    assert "x86-server-avx2" in rows and "shipped" in rows["pixel-6-cpu"]
    assert "my-phone" in rows and "p50_ms 7" in rows["my-phone"] and "measured" in rows["my-phone"]
    assert "unreadable" in rows["broken"]
    assert "estimated" in rows["iphone-15-pro-ane"]
    assert "a target names one: [[targets]] profile = NAME" in result.output  # brackets are text, not markup


def _tiny_transformers(path: Path, labels: list[str]) -> Path:
    from transformers import ResNetConfig, ResNetForImageClassification

    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic",
                          num_labels=len(labels), id2label=dict(enumerate(labels)),
                          label2id={name: i for i, name in enumerate(labels)})
    torch.manual_seed(0)
    ResNetForImageClassification(config).save_pretrained(path)
    return path


def test_a_transformers_classifier_is_compressed_with_its_own_head(tmp_path):
    model = _tiny_transformers(tmp_path / "tiny-resnet", [str(i) for i in range(10)])
    # An untrained head is at chance: the preprocessing check would refuse it, rightly; this
    # test is about the plumbing of a transformers model, so it opts out.
    config = _config(tmp_path, f'arch = "hf:{model.name}"\nimage_size = 32\ncheck_preprocessing = false',
                     extra="[budget]\nmax_drop_total = 100\n")
    config.write_text(config.read_text().replace('source = "digits"', 'source = "digits"\nmax_samples = 300'))
    result = cli("run", config, "--out", tmp_path / "out", "--cache-dir", tmp_path / "cache")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["model"]["arch"] == f"hf:{model}" and manifest["model"]["checkpoint"] is None
    assert manifest["artifacts"][0]["test_accuracy"] is not None


@pytest.mark.parametrize("labels, message", [
    ([str(i) for i in reversed(range(10))], "set data.classes = ['9', '8'"),
    ([str(i) for i in range(5)], "has 5 classes (0, 1, 2, 3, 4) but the data has 10"),
])
def test_a_transformers_classifier_for_other_classes_is_refused(tmp_path, labels, message):
    _tiny_transformers(tmp_path / "m", labels)
    result = cli("run", _config(tmp_path, 'arch = "hf:m"'), "--out", tmp_path / "out", "--cache-dir", tmp_path / "c")
    assert result.exit_code == 2 and message in " ".join(result.stderr.split()), result.output


def test_a_teacher_run_may_leave_out_stages_too():
    from edgekiln.engine.config import config_from_text, plan_of

    cfg = config_from_text('[data]\nsource = "digits"\n[teacher]\ncandidates = ["resnet10t"]\n'
                           '[pipeline]\nstages = ["distill", "quantize", "export"]\n'
                           '[[targets]]\nname = "s"\nprofile = "x86-server-avx2"\n')
    plan = plan_of(cfg)
    assert plan.names == ["teacher", "distill", "quantize", "export"]
    assert plan.skipped == {"given": "the run starts from teacher ([teacher])", "prune": "not in pipeline.stages"}


def test_compress_errors_name_the_flags_the_user_gave(tmp_path):
    """A checkpoint of another architecture, given to compress: the error names --weights, not
    a line of the config.toml compress wrote for itself."""
    import timm
    from safetensors.torch import save_file

    from edgekiln.interfaces.starting import in_flags

    assert in_flags("model.checkpoint (line 9): bad; data.test_path: gone") == \
        "--weights (model.checkpoint): bad; --test-data (data.test_path): gone"
    save_file(timm.create_model("mobilenetv3_small_050", num_classes=10).state_dict(), str(tmp_path / "w.safetensors"))
    images = tmp_path / "images"
    for label in ("a", "b"):
        (images / label).mkdir(parents=True)
        for i in range(3):
            from PIL import Image

            Image.fromarray(np.full((8, 8, 3), 60 * i, np.uint8)).save(images / label / f"{i}.png")
    result = cli("compress", "--arch", "resnet10t", "--weights", tmp_path / "w.safetensors", "--data", images,
                 "--target", "x86-server-avx2", "--out", tmp_path / "out", "--cache-dir", tmp_path / "cache")
    said = " ".join(result.stderr.split())
    assert result.exit_code == 2, result.output
    assert "--weights (model.checkpoint)" in said and "(line " not in said
