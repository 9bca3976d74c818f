"""The given model's preprocessing check (stages/given/precheck.py) and the metadata a
checkpoint carries about its input (stages/given/metadata.py).

One model is trained once, at 32 px with ImageNet mean/std. A model "trained with" another
normalization is that model behind a fixed affine layer that maps the other normalization's
input back onto ImageNet's: exactly the function a model trained that way would compute on
these images, so each alternative is tested without training a model for each."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from edgekiln.errors import InputError
from edgekiln.stages.given import metadata, precheck
from edgekiln.training import modeling

IMAGENET = precheck.NORMALIZATIONS["ImageNet mean/std"]


class Renormalized(nn.Module):
    """`model` (which expects ImageNet-normalized input) fed input normalized with `mean`/`std`."""

    def __init__(self, model, mean, std):
        super().__init__()
        self.model = model
        view = lambda v: torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1)  # noqa: E731
        self.register_buffer("mean", view(mean))
        self.register_buffer("std", view(std))
        self.register_buffer("in_mean", view(IMAGENET[0]))
        self.register_buffer("in_std", view(IMAGENET[1]))

    def forward(self, x):
        pixels = x * self.std + self.mean  # back to pixel / 255
        return self.model((pixels - self.in_mean) / self.in_std)


@pytest.fixture(scope="module")
def digits():
    """The digits at 32 px, uint8: the first 1,200 to train, the rest to check on."""
    from edgekiln.data.config import DataConfig
    from edgekiln.data.dataset import load_dataset

    data = load_dataset(DataConfig(source="digits", image_size=32, seed=0))
    return data


@pytest.fixture(scope="module")
def trained(digits):
    """A resnet10t trained 3 epochs at 32 px with ImageNet mean/std (about 10 s)."""
    from edgekiln.data.dataset import to_input

    torch.manual_seed(0)
    model = modeling.create("resnet10t", digits.num_classes, image_size=32)
    x = to_input(digits.train_x, *IMAGENET)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(3):
        for i in torch.randperm(len(x)).split(64):
            loss = nn.functional.cross_entropy(model(x[i]), digits.train_y[i])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def _bundle(model, size, mean, std):
    return modeling.ModelBundle("resnet10t", model, 10, size, tuple(mean), tuple(std))


def _decide(bundle, digits, native=None):
    images, labels = digits.val_x[:precheck.SAMPLE], digits.val_y[:precheck.SAMPLE]
    configured, best, screened = precheck.search(bundle, images, labels, native)
    hits = lambda c: precheck._hits(bundle, c, images, labels)  # noqa: E731
    return precheck.verdict(configured, best, hits(configured), hits(best), 10, screened)


def test_the_preprocessing_it_was_trained_with_passes(trained, digits):
    record = _decide(_bundle(trained, 32, *IMAGENET), digits)
    assert record["verdict"] == "as configured" and record["configured"]["accuracy"] > 90
    assert record["best"] == record["configured"] | {"accuracy": record["best"]["accuracy"]}


@pytest.mark.parametrize("trained_with", [k for k in precheck.NORMALIZATIONS if k != "ImageNet mean/std"])
def test_each_normalization_it_was_trained_with_is_named(trained, digits, trained_with):
    mean, std = precheck.NORMALIZATIONS[trained_with]
    model = Renormalized(trained, mean, std)
    with pytest.raises(InputError) as refused:
        _decide(_bundle(model, 32, *IMAGENET), digits)  # configured: ImageNet, the wrong one
    said = str(refused.value)
    assert f"at 32 px with {trained_with}" in said and "as configured, 32 px with ImageNet mean/std" in said
    assert f"--mean {precheck._values(mean, ',')} --std {precheck._values(std, ',')}" in said


def test_imagenet_statistics_are_named_when_the_config_says_half(trained, digits):
    with pytest.raises(InputError, match="at 32 px with ImageNet mean/std"):
        _decide(_bundle(trained, 32, (0.5,) * 3, (0.5,) * 3), digits)


def test_the_size_it_was_trained_at_is_named(trained, digits):
    with pytest.raises(InputError, match=r"at 32 px with ImageNet mean/std .*as configured, 128 px"):
        _decide(_bundle(trained, 128, *IMAGENET), digits, native=8)


def test_a_model_at_chance_under_every_alternative_is_refused(digits):
    torch.manual_seed(1)
    untrained = modeling.create("resnet10t", 10, image_size=32).eval()
    with pytest.raises(InputError, match="cannot be told from chance .*10.0% for 10 classes.*class") as refused:
        _decide(_bundle(untrained, 32, *IMAGENET), digits)
    assert "A reference at chance cannot gate anything" in str(refused.value)


def test_the_candidate_sizes_stay_at_or_below_the_larger_of_configured_and_native():
    assert precheck._sizes(176, 8) == [176, 32, 64, 96, 128, 160]
    assert precheck._sizes(32, 28) == [32, 28]
    assert precheck._sizes(32, 256) == [32, 256, 64, 96, 128, 160, 224]


def test_timm_config_beside_the_weights_is_read(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "config.json").write_text(json.dumps({
        "architecture": "resnet10t", "num_classes": 10,
        "pretrained_cfg": {"input_size": [3, 48, 48], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}))
    found = metadata.read(tmp_path / "model.safetensors")
    assert (found.image_size, found.mean, found.std) == (48, (0.5,) * 3, (0.25,) * 3)
    assert found.sources["mean"] == "config.json's pretrained_cfg"


def test_transformers_processor_is_read_with_its_rescale_and_normalize_flags(tmp_path):
    processor = {"size": {"height": 64, "width": 64}, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
                 "do_normalize": True, "do_rescale": True, "rescale_factor": 1 / 255}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(processor))
    found = metadata.read(hf_dir=tmp_path)
    assert (found.image_size, found.mean, found.std) == (64, (0.5,) * 3, (0.5,) * 3)
    processor.update(do_normalize=False, do_rescale=False, size={"shortest_edge": 40})
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(processor))
    found = metadata.read(hf_dir=tmp_path)
    assert found.image_size == 40 and found.mean == (0.0,) * 3
    assert np.allclose(found.std, [1 / 255] * 3)  # no rescale: the model sees pixels in [0, 255]


def test_safetensors_metadata_comes_before_the_files_beside_it(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "m.safetensors"),
              metadata={"input_size": "32", "mean": "0.5", "std": "[0.5, 0.5, 0.5]"})
    (tmp_path / "config.json").write_text(json.dumps({"pretrained_cfg": {"input_size": [3, 224, 224]}}))
    found = metadata.read(tmp_path / "m.safetensors")
    assert (found.image_size, found.mean) == (32, (0.5,) * 3)
    assert found.sources["image_size"] == "the metadata of m.safetensors"


def test_unreadable_metadata_names_the_file(tmp_path):
    (tmp_path / "m.pt").write_bytes(b"x")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="config.json: cannot read it as JSON"):
        metadata.read(tmp_path / "m.pt")


def test_a_given_model_fine_tuned_here_records_it_in_a_section_its_schema_reads(trained, digits, tmp_path):
    """[model] epochs > 0: the stage fine-tunes it and says so (its val accuracy before, the
    schedule); the manifest section reads back strictly typed (fine_tuned is a record)."""
    from safetensors.torch import save_file

    from edgekiln.stages.given import GivenSections, ModelConfig
    from edgekiln.stages.given import work as given
    from edgekiln.stages.given.records import GivenModelRecord
    from edgekiln.stages.given.report import REPORT
    from edgekiln.training.config import TrainConfig

    save_file(trained.state_dict(), tmp_path / "model.safetensors")
    cfg = ModelConfig(arch="resnet10t", checkpoint=tmp_path / "model.safetensors", mean=IMAGENET[0],
                      std=IMAGENET[1], image_size=32, epochs=1)
    result = given.run(digits, GivenSections(model=cfg, train=TrainConfig(batch_size=64)), tmp_path)
    assert result.figures.fine_tuned is not None and result.figures.fine_tuned.val_accuracy_before > 50
    section = json.loads(json.dumps(REPORT.manifest(result, {})["model"]))
    record = GivenModelRecord.model_validate(section, strict=True)
    assert record.fine_tuned.schedule and record.accuracy == result.accuracy and record.params > 0
