"""Models: creation from timm, size and cost figures, and safe persistence of (pruned) models."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from edgekiln.stages.errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Integer attributes that structured pruning changes; saved beside the weights so that a
# pruned model can be rebuilt from its timm architecture without pickling any module.
_STRUCTURE_ATTRS = ("in_channels", "out_channels", "groups", "in_features", "out_features",
                    "num_features", "normalized_shape", "num_heads", "head_dim", "embed_dim")


@dataclass
class ModelBundle:
    """A classifier plus what is needed to feed it: timm arch, input size, normalization."""

    arch: str
    model: nn.Module
    num_classes: int
    input_size: int
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    source: str = ""  # where the weights came from (timm name, checkpoint path), for reports

    def example_input(self, batch: int = 1) -> torch.Tensor:
        return torch.randn(batch, 3, self.input_size, self.input_size)


def is_known_arch(arch: str) -> bool:
    """A timm registry name, or a timm Hugging Face hub id (`hf-hub:org/name`, resolved
    when the model is created)."""
    import timm

    return arch.startswith("hf-hub:") or timm.is_model(arch)


def create(arch: str, num_classes: int, pretrained: bool = False, seed: int | None = None) -> nn.Module:
    """A timm model with a fresh `num_classes` head (initialised from `seed` when given, so
    a stage's result does not depend on what ran before it); InputError for unknown names."""
    import timm

    if seed is not None:
        torch.manual_seed(seed)
    if not is_known_arch(arch):
        raise InputError(f"unknown timm architecture {arch!r}")
    try:
        return timm.create_model(arch, pretrained=pretrained, num_classes=num_classes)
    except Exception as e:  # downloads fail offline, hub ids may not exist
        raise InputError(f"cannot create {arch!r} (pretrained={pretrained}): {e}") from e


def bundle(arch: str, model: nn.Module, num_classes: int, input_size: int, source: str = "") -> ModelBundle:
    """Wrap a timm model with the normalization it was (pre)trained with."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return ModelBundle(arch, model, num_classes, input_size, tuple(cfg.get("mean", IMAGENET_MEAN)),
                       tuple(cfg.get("std", IMAGENET_STD)), source=source)


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def macs(model: nn.Module, input_size: int) -> int:
    """Multiply-accumulates of one batch-1 forward pass (torch-pruning's op counter)."""
    import torch_pruning as tp

    probe = copy.deepcopy(model).cpu().eval()
    count, _ = tp.utils.count_ops_and_params(probe, torch.randn(1, 3, input_size, input_size))
    return int(count)


def save_bundle(bundle: ModelBundle, directory: Path) -> None:
    """Write weights (safetensors) and structure/metadata (JSON) into `directory`."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    model = bundle.model
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / "weights.safetensors"))
    structure = {}
    for name, module in model.named_modules():
        attrs = {a: getattr(module, a) for a in _STRUCTURE_ATTRS
                 if isinstance(getattr(module, a, None), (int, tuple, list))}
        if attrs:
            structure[name] = attrs
    meta = {"arch": bundle.arch, "num_classes": bundle.num_classes, "input_size": bundle.input_size,
            "mean": list(bundle.mean), "std": list(bundle.std), "source": bundle.source,
            "structure": structure}
    (directory / "bundle.json").write_text(json.dumps(meta, indent=1))


def load_bundle(directory: Path) -> ModelBundle:
    """Rebuild a model saved by `save_bundle` (safetensors only: nothing is unpickled)."""
    from safetensors.torch import load_file

    meta = json.loads((directory / "bundle.json").read_text())
    model = create(meta["arch"], meta["num_classes"])
    modules = dict(model.named_modules())
    for name, attrs in meta["structure"].items():
        for attr, value in attrs.items():
            setattr(modules[name], attr, tuple(value) if isinstance(value, list) else value)
    _put_tensors(model, load_file(str(directory / "weights.safetensors")))
    return ModelBundle(arch=meta["arch"], model=model.eval(), num_classes=meta["num_classes"],
                       input_size=meta["input_size"], mean=tuple(meta["mean"]), std=tuple(meta["std"]),
                       source=meta["source"])


def _put_tensors(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Install `state` as the model's parameters and buffers, whatever their shapes
    (load_state_dict refuses the pruned shapes even with assign=True)."""
    expected = set(model.state_dict())
    if set(state) != expected:
        raise ValueError(f"saved weights do not match the architecture: missing "
                         f"{sorted(expected - set(state))[:3]}, unexpected {sorted(set(state) - expected)[:3]}")
    modules = dict(model.named_modules())
    for name, tensor in state.items():
        owner, _, attr = name.rpartition(".")
        module = modules[owner]
        if attr in module._parameters:
            module._parameters[attr] = nn.Parameter(tensor, requires_grad=module._parameters[attr].requires_grad)
        else:
            module._buffers[attr] = tensor


def load_checkpoint(model: nn.Module, path: Path) -> list[str]:
    """Load a local checkpoint (.safetensors, or .pt/.pth with weights_only) into `model`.

    Keys whose shapes differ from the model's (a classifier for another class count) are
    skipped, so a checkpoint trained elsewhere can be fine-tuned here. Returns the skipped
    keys; any other mismatch is an InputError naming the file.
    """
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
            for key in ("state_dict", "model", "model_state_dict"):
                if isinstance(state, dict) and isinstance(state.get(key), dict):
                    state = state[key]
    except Exception as e:
        raise InputError(f"checkpoint {path} cannot be read: {e}") from e
    if not isinstance(state, dict):
        raise InputError(f"checkpoint {path} holds no state dict")
    own = model.state_dict()
    skipped = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    state = {k: v for k, v in state.items() if k not in skipped}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in skipped]
    if missing or unexpected:
        raise InputError(f"checkpoint {path} does not fit {type(model).__name__}: "
                         f"{len(missing)} missing keys (e.g. {missing[:3]}), "
                         f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    return skipped
