"""A teacher that needs no labels: `clip:<dir>` builds its classifier from the class names
with the text tower, is scored like any candidate, saves and loads without its text tower,
and teaches a student through every stage. No weights can be downloaded here, so the model
is a small CLIPModel built from a config with random weights and saved with save_pretrained."""

import json

import numpy as np
import pytest
import torch

from edgekiln.errors import InputError
from edgekiln.training import modeling, zero_shot
from edgekiln.stages.teacher import TeacherSections
from tiny_pipeline import invoke, write_config

CLASSES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def tiny_clip(directory, image_size=32, tokenizer=True, processor=True, positions=77):
    """A CLIP model small enough to build in a second (random weights), saved like a hub one."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    chars = sorted(ByteLevel.alphabet())  # a character-level byte BPE: every text tokenizes
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars])}
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=positions, bos_token_id=len(vocab) - 2,
                         eos_token_id=len(vocab) - 1, pad_token_id=len(vocab) - 1),
        vision_config=dict(image_size=image_size, patch_size=8, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=1, num_attention_heads=2),
        projection_dim=16)
    CLIPModel(config).save_pretrained(directory)
    if tokenizer:
        CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(directory)
    if processor:
        CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
                           image_mean=[0.5, 0.5, 0.5], image_std=[0.25, 0.25, 0.25]).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


def test_the_zero_shot_head_gives_clips_own_image_text_logits(clip_dir):
    from transformers import AutoModel, AutoTokenizer

    prompt = ["a photo of a {}."]
    model = zero_shot.create(f"clip:{clip_dir}", CLASSES, prompt).eval()
    hf, tokenizer = AutoModel.from_pretrained(clip_dir).eval(), AutoTokenizer.from_pretrained(clip_dir)
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = hf(pixel_values=images, **tokenizer([prompt[0].format(c) for c in CLASSES], padding=True,
                                                       return_tensors="pt")).logits_per_image
        torch.testing.assert_close(model(images), expected, rtol=1e-4, atol=1e-4)
    assert model.hf.text_model is None and not any(k.startswith("hf.text") for k in model.state_dict())


def test_a_zero_shot_teacher_saves_and_loads_without_its_text_tower(clip_dir, tmp_path):
    model = zero_shot.create(f"clip:{clip_dir}", CLASSES[:3], ["a {} digit"])
    bundle = modeling.bundle(f"clip:{clip_dir}", model, 3, 32, native_size=True)
    assert (bundle.input_size, bundle.mean, bundle.std) == (32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    modeling.save_bundle(bundle, tmp_path / "saved")
    loaded = modeling.load_bundle(tmp_path / "saved")
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(images), model.eval()(images))
    assert loaded.input_size == 32 and loaded.mean == (0.5, 0.5, 0.5)


@pytest.mark.parametrize("broken, message", [
    ("no tokenizer", "has no tokenizer that loads"),
    ("image tower only", "without a text tower and an image tower"),
    ("missing", "cannot load CLIP checkpoint"),
])
def test_a_clip_candidate_that_cannot_build_a_head_is_bad_input_naming_it(tmp_path, broken, message):
    from edgekiln.stages.teacher.work import preflight
    from edgekiln.stages.teacher import TeacherConfig

    directory = tmp_path / "model"
    if broken == "no tokenizer":
        tiny_clip(directory, tokenizer=False)
    elif broken == "image tower only":
        from transformers import CLIPVisionConfig, CLIPVisionModel

        CLIPVisionModel(CLIPVisionConfig(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2)).save_pretrained(directory)
    with pytest.raises(InputError, match=message) as caught:
        preflight(TeacherSections(teacher=TeacherConfig(candidates=[f"clip:{directory}"], epochs=0)))
    assert "teacher.candidates[0]" in str(caught.value) and str(directory) in str(caught.value)


def test_a_prompt_without_a_place_for_the_name_is_a_config_error():
    from pydantic import ValidationError

    from edgekiln.stages.teacher import TeacherConfig

    with pytest.raises(ValidationError, match="must hold {} once"):
        TeacherConfig(candidates=["clip:x"], prompts=["a photo"])
    with pytest.raises(ValidationError, match="would distil from resnet10t untrained"):
        TeacherConfig(candidates=["clip:x", "resnet10t"], epochs=0)
    TeacherConfig(candidates=["clip:x"], epochs=0)  # zero-shot needs no training


def test_a_clip_teacher_distils_on_unlabelled_images_through_every_stage_to_artifacts(clip_dir, tmp_path):
    """The issue's case in one run: no teacher trained on labels, frames without labels."""
    from test_unlabelled import write_images

    frames = write_images(tmp_path / "frames", 24, size=40)
    config = write_config(tmp_path, targets='[[targets]]\nname = "server"\nformat = "onnx"\n')
    text = config.read_text().replace("seed = 0", f'seed = 0\nunlabelled_path = "{frames}"', 1)
    text = text.replace('candidates = ["resnet10t", "mobilenetv3_small_050"]\nepochs = 4',
                                      f'candidates = ["clip:{clip_dir}"]\nepochs = 0\n'
                                      'prompts = ["a photo of the number {}.", "a digit: {}"]')
    text = text.replace("epochs = 6", "epochs = 1").replace("finetune_epochs = 2", "finetune_epochs = 1")
    config.write_text(text)
    result = invoke(config, tmp_path / "out", tmp_path / "cache")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["error"] is None, manifest["error"]
    teacher = manifest["teacher"]["candidates"][0]
    assert teacher["name"] == f"clip:{clip_dir}" and teacher["input_size"] == 32
    assert teacher["zero_shot"]["head"] == "zero-shot" and teacher["zero_shot"]["labels_used"] is False
    assert teacher["zero_shot"]["prompts"] == ["a photo of the number {}.", "a digit: {}"]
    assert teacher["schedule"]["mode"] == "zero-shot"
    assert [s["name"] for s in manifest["stages"]] == ["teacher", "distill", "prune", "quantize", "export"]
    assert np.isclose(teacher["accuracy"], manifest["stages"][0]["accuracy"])
    assert (tmp_path / "out" / "model.onnx").is_file()
    student = manifest["student"]  # the unlabelled frames: counted, seen by the student's loss
    assert student["unlabelled"]["images"] == 24 and student["unlabelled"]["left_out"] == 0
    chosen = next(c for c in student["candidates"] if c["chosen"])
    assert chosen["unlabelled_seen"] == 24  # one epoch
    assert chosen["teacher_outputs"]["computed"].startswith("once per image")  # the tiny recipe augments nothing
    assert chosen["teacher_outputs"]["precompute_seconds"] >= 0
    # pruning's recovery distils from the same teacher on the same images: it re-uses them from disk
    recovered = [s for s in manifest["prune"]["steps"] if "recovery" in s]
    assert recovered and all(s["teacher_outputs"]["reused"] and s["teacher_outputs"]["entry"]
                             == chosen["teacher_outputs"]["stored_as"] for s in recovered)
    assert (tmp_path / "cache" / ".teacher-outputs" / chosen["teacher_outputs"]["stored_as"]).is_dir()
    assert f"KD also on 24 unlabelled images ({frames})" in (tmp_path / "out" / "MODEL_CARD.md").read_text()
    splits = json.loads((tmp_path / "out" / "splits.json").read_text())  # val and test: the digits only
    assert splits["val"]["root"] == splits["test"]["root"] == "digits"


def test_a_linear_probe_trains_the_head_only_and_competes_with_fine_tuned_teachers(clip_dir, tmp_path):
    from edgekiln.data.dataset import DataConfig, load_dataset
    from edgekiln.stages.teacher import TeacherConfig
    from edgekiln.stages.teacher import work as teacher
    from edgekiln.training.config import TrainConfig

    data = load_dataset(DataConfig(source="digits", image_size=32, max_samples=120))
    before = zero_shot.create(f"clip:{clip_dir}", data.classes).state_dict()
    cfg = TeacherConfig(candidates=[f"clip:{clip_dir}", "resnet10t"], epochs=1, clip_head="linear-probe",
                        ensemble=2)
    result = teacher.run(data, TeacherSections(teacher=cfg, train=TrainConfig()), tmp_path)
    record = next(c for c in result.figures.candidates if c.name.startswith("clip:"))
    assert record.zero_shot["labels_used"] and record.schedule["mode"] == "fixed"
    assert "linear-probe head from 8 prompts per class name; trained on the labelled train split" in record.why
    after = next(b for b in result.bundles if b.arch.startswith("clip:")).model.state_dict()
    assert not torch.equal(after["head.weight"], before["head.weight"])
    tower = [k for k in before if k.startswith("hf.")]
    assert tower and all(torch.equal(after[k], before[k]) for k in tower)
    assert len(result.bundles) == 2  # an ensemble of the CLIP teacher and a fine-tuned one


def test_a_run_stops_before_any_work_on_a_clip_directory_without_a_tokenizer_exit_2(tmp_path):
    from typer.testing import CliRunner

    from edgekiln.interfaces.cli import app

    broken = tiny_clip(tmp_path / "no-tokenizer", tokenizer=False)
    config = write_config(tmp_path, targets='[[targets]]\nname = "server"\nformat = "onnx"\n')
    config.write_text(config.read_text().replace('candidates = ["resnet10t", "mobilenetv3_small_050"]\nepochs = 4',
                                                 f'candidates = ["clip:{broken}"]\nepochs = 0'))
    result = CliRunner().invoke(app, ["validate", str(config)])  # validate imports no torch: it says what it left
    assert result.exit_code == 0 and "clip: teachers have a text tower and a tokenizer" in " ".join(result.output.split())
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(tmp_path / "out"),
                                      "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 2, result.output
    assert f"teacher.candidates[0]: '{broken}' has no tokenizer that loads" in result.stderr
    assert not (tmp_path / "out" / "model.onnx").exists() and not (tmp_path / "cache" / "teacher").exists()
