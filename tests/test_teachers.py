"""Teacher sources (timm, transformers checkpoints, local files) and the selection policy."""

import json

import pytest
import torch

from edgekiln.data.dataset import DataConfig, load_dataset
from edgekiln.errors import InputError
from edgekiln.stages.teacher import work as teacher
from edgekiln.training import evaluation, modeling
from edgekiln.training.config import TrainConfig
from edgekiln.stages.teacher import TeacherSections
from edgekiln.system.records import dumped


@pytest.fixture(scope="module")
def data():
    return load_dataset(DataConfig(source="digits", image_size=32, max_samples=120))


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A small transformers ViT classifier saved the way a user's fine-tuned one would be."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    directory = tmp_path_factory.mktemp("hf") / "tiny-vit"
    config = ViTConfig(image_size=48, patch_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, num_labels=5, architectures=["ViTForImageClassification"])
    torch.manual_seed(0)
    ViTForImageClassification(config).save_pretrained(directory)
    ViTImageProcessor(size={"height": 48, "width": 48}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(directory)
    return directory


def test_transformers_checkpoint_is_a_teacher_with_its_own_size_and_normalization(hf_dir, tmp_path):
    arch = f"hf:{hf_dir}"
    assert modeling.is_known_arch(arch)
    model = modeling.create(arch, num_classes=10)  # new 10-class head on the 5-class checkpoint
    b = modeling.bundle(arch, model, 10, 32, native_size=True)
    assert (b.input_size, b.mean, b.std) == (48, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    images = torch.randint(0, 255, (3, 3, 32, 32), dtype=torch.uint8)
    expected = evaluation.logits(b, images)
    assert expected.shape == (3, 10)
    features, out = evaluation.features_and_logits(b.model.eval(), evaluation.model_input(b, images))
    assert features.dim() == 3 and torch.allclose(out, expected, atol=1e-5)
    modeling.save_bundle(b, tmp_path)
    assert torch.allclose(evaluation.logits(modeling.load_bundle(tmp_path), images), expected, atol=1e-5)


def test_preflight_accepts_a_transformers_directory_and_rejects_a_missing_one(hf_dir, tmp_path):
    teacher.preflight(TeacherSections(teacher=teacher.TeacherConfig(candidates=[f"hf:{hf_dir}"])))
    with pytest.raises(InputError, match=r"teacher.candidates\[0\]: cannot load transformers checkpoint"):
        teacher.preflight(TeacherSections(teacher=teacher.TeacherConfig(candidates=[f"hf:{tmp_path / 'nope'}"])))


def test_preflight_names_missing_corrupt_and_unknown_candidates(tmp_path):
    corrupt = tmp_path / "t.pt"
    corrupt.write_bytes(b"not a checkpoint")
    cases = [
        ({"arch": "resnet10t", "checkpoint": tmp_path / "missing.safetensors"}, "missing.safetensors does not exist"),
        ({"arch": "resnet10t", "checkpoint": corrupt}, "t.pt cannot be read"),
        ("resnet_nope", "unknown timm architecture 'resnet_nope'"),
        (str(corrupt), "is a file; give it as"),
    ]
    for candidate, message in cases:
        with pytest.raises(InputError, match=message):
            teacher.preflight(TeacherSections(teacher=teacher.TeacherConfig(candidates=["resnet10t", candidate])))


def run_teacher(data, **cfg):
    config = TeacherSections(teacher=teacher.TeacherConfig(**cfg), train=TrainConfig(batch_size=32))
    return teacher.run(data, config, None)


def test_selection_records_every_candidate_with_why(data):
    result = run_teacher(data, candidates=["resnet10t", "mobilenetv3_small_050"], epochs=1,
                         select="accuracy_per_gflop", max_macs=20e6)
    records = {r.name: r for r in result.figures.candidates}
    assert records["resnet10t"].accuracy is None and "teacher.max_macs" in records["resnet10t"].why
    chosen = records["mobilenetv3_small_050"]
    assert chosen.chosen and chosen.why == "best accuracy per GFLOP"
    assert chosen.host_latency_ms > 0 and chosen.input_size == 32
    json.dumps(dumped(result.figures))  # the manifest and the cache store it


def test_every_candidate_excluded_is_an_input_error(data):
    with pytest.raises(InputError, match="every candidate is excluded"):
        run_teacher(data, candidates=["resnet10t"], epochs=1, max_latency_ms=1e-6)


def test_ensemble_keeps_the_top_k_and_scores_their_average(data):
    result = run_teacher(data, candidates=["resnet10t", "mobilenetv3_small_050", "mobilenetv3_small_075"], epochs=1, ensemble=2)
    chosen = [r for r in result.figures.candidates if r.chosen]
    assert len(chosen) == 2 and len(result.bundles) == 2
    best = max(r.accuracy for r in result.figures.candidates)
    assert chosen[0].accuracy == best or chosen[1].accuracy == best
    averaged = torch.stack([evaluation.logits(b, data.val_x) for b in result.bundles]).mean(0)
    assert result.accuracy == evaluation.accuracy(averaged, data.val_y)


def test_teacher_stage_fine_tunes_a_transformers_checkpoint_at_its_own_size(data, hf_dir):
    result = run_teacher(data, candidates=[f"hf:{hf_dir}", "mobilenetv3_small_050"], epochs=1)
    records = {r.name: r for r in result.figures.candidates}
    hf = records[f"hf:{hf_dir}"]
    assert hf.input_size == 48 and hf.accuracy is not None and hf.macs > 0
    assert records["mobilenetv3_small_050"].input_size == 32


def test_pretrained_weights_that_cannot_be_had_here_stop_the_run_at_preflight(monkeypatch):
    """Offline (the tests run with HF_HUB_OFFLINE=1) and not in the hub cache: refused before
    the data is read, naming the candidate, instead of failing at the download after the
    pre-check."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match=r"teacher.candidates\[0\]: teacher.pretrained = true, but "
                                         r"timm/resnet18\.\S+ is not in the local hub cache and HF_HUB_OFFLINE is set"):
        teacher.preflight(TeacherSections(teacher=teacher.TeacherConfig(candidates=["resnet18"], pretrained=True)))
