"""Every supported student family prunes, keeps its attention intact, and round-trips
through safetensors with its pruned shapes."""

import subprocess
import sys

import pytest
import torch

from edgekiln.stages.prune.work import kept_layers, prune_to_macs
from edgekiln.training import modeling
from edgekiln.stages.distill import DistillSections

STUDENTS = ["mobilenetv3_small_050", "mobilenetv3_large_075", "mobilenetv4_conv_small",
            "mobilevit_xxs", "mobilevitv2_050", "resnet10t_w16"]


@pytest.mark.parametrize("arch", STUDENTS)
def test_student_prunes_and_round_trips(arch, tmp_path):
    torch.manual_seed(0)
    bundle = modeling.ModelBundle(arch, modeling.create(arch, 10).eval(), 10, 32)
    before, after = prune_to_macs(bundle.model, 32, 0.7)
    assert after <= 0.7 * before
    bundle.model.eval()
    x = torch.randn(2, 3, 32, 32)
    expected = bundle.model(x)
    assert expected.shape == (2, 10)
    modeling.save_bundle(bundle, tmp_path)
    loaded = modeling.load_bundle(tmp_path)
    assert torch.allclose(loaded.model(x), expected, atol=1e-5)


def test_mobilevit_pruning_keeps_attention_and_prunes_mlp_and_convs():
    torch.manual_seed(0)
    model = modeling.create("mobilevit_xxs", 10).eval()
    original = {n: m.weight.shape for n, m in model.named_modules() if hasattr(m, "weight") and m.weight is not None}
    prune_to_macs(model, 32, 0.6)
    attention = [(n, m) for n, m in model.named_modules() if type(m).__name__ == "Attention"]
    assert attention
    for name, attn in attention:
        assert attn.qkv.out_features == 3 * attn.num_heads * attn.head_dim
        assert model.get_submodule(name).qkv.weight.shape == original[f"{name}.qkv"]
    fc1 = [n for n, _ in model.named_modules() if n.endswith("mlp.fc1")]
    assert any(model.get_submodule(n).weight.shape[0] < original[n][0] for n in fc1)  # MLP hidden pruned
    convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert any(model.get_submodule(n).weight.shape[0] < original[n][0] for n in convs)


def test_kept_layers_are_the_classifier_and_attention_projections():
    model = modeling.create("mobilevit_xxs", 10)
    kept = kept_layers(model)
    assert kept[0] is model.get_classifier()
    names = {n for n, m in model.named_modules() if any(m is k for k in kept[1:])}
    assert names and all(n.endswith(("attn.qkv", "attn.proj")) for n in names)


def test_a_narrow_resnet_reloads_in_a_fresh_process_and_has_no_published_weights(tmp_path):
    torch.manual_seed(0)
    bundle = modeling.ModelBundle("resnet10t_w24", modeling.create("resnet10t_w24", 10).eval(), 10, 32)
    assert [m.out_channels for m in (bundle.model.layer1[0].conv1, bundle.model.layer4[0].conv1)] == [24, 192]
    modeling.save_bundle(bundle, tmp_path)
    # a process that never named it builds it from the saved arch (registered on first use)
    code = ("from pathlib import Path; from edgekiln.training import modeling; "
            f"print(modeling.params(modeling.load_bundle(Path({str(tmp_path)!r})).model))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert int(out) == modeling.params(bundle.model)
    from edgekiln.errors import InputError
    from edgekiln.stages.distill import StudentConfig
    from edgekiln.stages.distill.work import preflight

    with pytest.raises(InputError, match=r"student.arch\[1\]: timm has no pretrained weights for 'resnet10t_w16'"):
        preflight(DistillSections(student=StudentConfig(arch=["mobilevit_xxs", "resnet10t_w16"], pretrained=True)))
