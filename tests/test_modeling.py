import pytest
import torch
from safetensors.torch import save_file

from edgekiln.errors import InputError
from edgekiln.stages.prune.work import prune_to_macs
from edgekiln.training import modeling


def bundle(arch="mobilenetv3_small_050", classes=10):
    torch.manual_seed(0)
    return modeling.ModelBundle(arch, modeling.create(arch, classes).eval(), classes, 32)


def test_pruned_model_round_trips_through_safetensors(tmp_path):
    b = bundle()
    before, after = prune_to_macs(b.model, 32, 0.6)
    assert after <= 0.6 * before
    b.model.eval()
    x = torch.randn(2, 3, 32, 32)
    expected = b.model(x)
    modeling.save_bundle(b, tmp_path)
    loaded = modeling.load_bundle(tmp_path)
    assert modeling.macs(loaded.model, 32) == after
    assert torch.allclose(loaded.model(x), expected, atol=1e-5)
    assert not list(tmp_path.glob("*.pt"))  # nothing pickled


def test_unknown_arch_is_input_error():
    with pytest.raises(InputError, match="unknown timm architecture 'resnet_999'"):
        modeling.create("resnet_999", 10)


def test_checkpoint_from_another_class_count_gets_a_new_head(tmp_path):
    source = modeling.create("resnet10t", 1000)
    path = tmp_path / "t.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    target = modeling.create("resnet10t", 10)
    skipped = modeling.load_checkpoint(target, path)
    assert sorted(skipped) == ["fc.bias", "fc.weight"]
    assert torch.equal(target.conv1[0].weight, source.conv1[0].weight)


def test_pt_checkpoint_loads_with_weights_only(tmp_path):
    source = modeling.create("resnet10t", 10)
    path = tmp_path / "t.pt"
    torch.save({"state_dict": source.state_dict()}, path)
    target = modeling.create("resnet10t", 10)
    assert modeling.load_checkpoint(target, path) == []
    assert torch.equal(target.fc.weight, source.fc.weight)


def test_corrupt_missing_and_mismatched_checkpoints_are_input_errors(tmp_path):
    corrupt = tmp_path / "bad.safetensors"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="bad.safetensors cannot be read"):
        modeling.load_checkpoint(modeling.create("resnet10t", 10), corrupt)
    with pytest.raises(InputError, match="does not exist"):
        modeling.load_checkpoint(modeling.create("resnet10t", 10), tmp_path / "none.pt")
    other = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() for k, v in modeling.create("mobilenetv3_small_050", 10).state_dict().items()},
              str(other))
    with pytest.raises(InputError, match="does not fit"):
        modeling.load_checkpoint(modeling.create("resnet10t", 10), other)


def test_timm_hub_ids_pass_the_name_check():
    assert modeling.is_known_arch("hf-hub:timm/resnet18.a1_in1k")
    assert not modeling.is_known_arch("resnet_999")
