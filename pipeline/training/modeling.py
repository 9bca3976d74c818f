"""Models: creation from timm, size and cost figures, and safe persistence of (pruned) models."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from edgekiln.errors import InputError

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


TRANSFORMERS_PREFIX = "hf:"  # a Hugging Face transformers checkpoint: hub id or local directory


def is_transformers(arch: str) -> bool:
    return arch.startswith(TRANSFORMERS_PREFIX)


def timm_registry():
    """timm, with edgekiln's own architectures (narrow_resnet) in its registry."""
    import timm

    from edgekiln.training import narrow_resnet

    narrow_resnet.register()
    return timm


def is_known_arch(arch: str) -> bool:
    """A timm registry name, a timm Hugging Face hub id (`hf-hub:org/name`), a
    transformers image classifier (`hf:org/name` or `hf:/local/dir`) or a CLIP-style model
    (`clip:org/name` or `clip:/local/dir`); the last three are resolved when the model is created."""
    timm = timm_registry()

    from edgekiln.training import zero_shot

    return arch.startswith("hf-hub:") or is_transformers(arch) or zero_shot.is_zero_shot(arch) or timm.is_model(arch)


def check_known_arch(key: str, arch: str) -> None:
    """InputError naming `key` when `arch` is not a model name (is_known_arch), with the
    closest timm name where the name looks mistyped."""
    if is_known_arch(arch):
        return
    from edgekiln.system.errors import did_you_mean

    timm = timm_registry()

    raise InputError(f"{key}: unknown timm architecture {arch!r}{did_you_mean(arch, timm.list_models())}")


class TransformersClassifier(nn.Module):
    """A transformers `AutoModelForImageClassification` as a plain images -> logits module."""

    def __init__(self, hf_model: nn.Module):
        super().__init__()
        self.hf = hf_model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hf(pixel_values=x).logits

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.hf(pixel_values=x, output_hidden_states=True)
        return out.hidden_states[-1], out.logits


def check_transformers_classifier(key: str, arch: str):
    """A transformers reference's config, which must be an image classifier's (InputError
    naming `key` otherwise, or when it cannot be read)."""
    from transformers import AutoConfig

    ref = arch[len(TRANSFORMERS_PREFIX):]
    try:
        config = AutoConfig.from_pretrained(ref)
    except Exception as e:
        raise InputError(f"{key}: cannot load transformers checkpoint {ref!r}: {str(e).splitlines()[0]}") from None
    if not any(a.endswith("ForImageClassification") for a in (config.architectures or ["ForImageClassification"])):
        raise InputError(f"{key}: {ref!r} is a {config.architectures} checkpoint, not an image classifier")
    return config


def _create_transformers(ref: str, num_classes: int) -> nn.Module:
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(
        ref, num_labels=num_classes, ignore_mismatched_sizes=True)  # a new head for our classes
    return TransformersClassifier(model)


def create(arch: str, num_classes: int, pretrained: bool = False, seed: int | None = None,
           image_size: int | None = None) -> nn.Module:
    """A model with a fresh `num_classes` head (initialised from `seed` when given, so a
    stage's result does not depend on what ran before it). timm names and `hf-hub:` ids load
    published weights when `pretrained`; `hf:` transformers checkpoints always load theirs.
    `image_size` is passed on to timm models that are built for one input size (ViTs);
    InputError, naming the model, when it cannot be created."""
    timm = timm_registry()

    if seed is not None:
        torch.manual_seed(seed)
    if not is_known_arch(arch):
        raise InputError(f"unknown timm architecture {arch!r}")
    try:
        if is_transformers(arch):
            return _create_transformers(arch[len(TRANSFORMERS_PREFIX):], num_classes)
        if image_size is not None:
            try:
                return timm.create_model(arch, pretrained=pretrained, num_classes=num_classes, img_size=image_size)
            except TypeError as e:  # a model that takes any input size has no `img_size`
                if "img_size" not in str(e):
                    raise
        return timm.create_model(arch, pretrained=pretrained, num_classes=num_classes)
    except Exception as e:  # downloads fail offline, hub ids may not exist, files may be corrupt
        raise InputError(f"cannot create {arch!r} (pretrained={pretrained}): {str(e).splitlines()[0]}") from e


def native_data_config(arch: str, model: nn.Module) -> dict:
    """The input size, mean and std the model's weights were trained with: timm's data
    config, or a transformers checkpoint's image processor."""
    from edgekiln.training import zero_shot

    if isinstance(model, (TransformersClassifier, zero_shot.ZeroShotClassifier)):
        from transformers import AutoImageProcessor

        config = model.hf.config
        size = getattr(getattr(config, "vision_config", config), "image_size", 224)
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        try:
            processor = AutoImageProcessor.from_pretrained(arch.split(":", 1)[1])
            mean, std = processor.image_mean, processor.image_std
            size = processor.size.get("height") or processor.size.get("shortest_edge") or size
        except (OSError, ValueError, AttributeError):
            pass  # no processor saved: the config's image size and ImageNet statistics
        size = size[0] if isinstance(size, (list, tuple)) else size
        return {"input_size": int(size), "mean": tuple(mean), "std": tuple(std)}
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=model)
    return {"input_size": int(cfg["input_size"][-1]), "mean": tuple(cfg["mean"]), "std": tuple(cfg["std"])}


def bundle(arch: str, model: nn.Module, num_classes: int, input_size: int, source: str = "",
           native_size: bool = False) -> ModelBundle:
    """Wrap a model with the normalization its weights were trained with. It is fed at
    `input_size`, or at its weights' own input size when `native_size`."""
    cfg = native_data_config(arch, model)
    size = cfg["input_size"] if native_size else input_size
    return ModelBundle(arch, model, num_classes, size, cfg["mean"], cfg["std"], source=source)


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
        own = vars(module)  # instance attributes only: some modules expose these as properties
        attrs = {a: own[a] for a in _STRUCTURE_ATTRS if isinstance(own.get(a), (int, tuple, list))}
        if attrs:
            structure[name] = attrs
    meta = {"arch": bundle.arch, "num_classes": bundle.num_classes, "input_size": bundle.input_size,
            "mean": list(bundle.mean), "std": list(bundle.std), "source": bundle.source,
            "structure": structure}
    if isinstance(model, TransformersClassifier):
        model.hf.config.save_pretrained(str(directory / "transformers"))
    from edgekiln.training import zero_shot

    if isinstance(model, zero_shot.ZeroShotClassifier):
        zero_shot.save_config(model, directory / "clip")
    (directory / "bundle.json").write_text(json.dumps(meta, indent=1))


def load_bundle(directory: Path) -> ModelBundle:
    """Rebuild a model saved by `save_bundle` (safetensors only: nothing is unpickled)."""
    from safetensors.torch import load_file

    meta = json.loads((directory / "bundle.json").read_text())
    if is_transformers(meta["arch"]):  # rebuilt from the saved config, not from the hub
        from transformers import AutoConfig, AutoModelForImageClassification

        config = AutoConfig.from_pretrained(str(directory / "transformers"))
        model = TransformersClassifier(AutoModelForImageClassification.from_config(config))
    elif meta["arch"].startswith("clip:"):
        from edgekiln.training import zero_shot

        model = zero_shot.from_saved_config(directory / "clip", meta["num_classes"])
    else:
        model = create(meta["arch"], meta["num_classes"], image_size=meta["input_size"])
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


# Prefixes a training wrapper adds to every key: DistributedDataParallel, torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A local checkpoint's tensors: .safetensors, or .pt/.pth read with weights_only (a dict
    that holds them under state_dict / model / model_state_dict too), without the prefix a
    training wrapper put on every key. InputError naming the file when it cannot be read."""
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
        import pickle
        import re

        if isinstance(e, pickle.UnpicklingError):
            # torch's own text advises weights_only=False, which would run the file's code: not repeated
            found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
            if found:
                raise InputError(
                    f"checkpoint {path} holds pickled Python objects beyond tensors ({found.group(1)}: a whole "
                    "nn.Module, an optimizer or another class), which edgekiln does not unpickle since that can run "
                    "code from the file. Save the weights alone instead: `from safetensors.torch import save_file; "
                    "save_file(model.state_dict(), 'model.safetensors')` (or torch.save(model.state_dict(), ...))"
                ) from None
            detail = re.search(r"WeightsUnpickler error:\s*([^\n]+)", str(e))
            why = detail.group(1).strip() if detail else type(e).__name__
            raise InputError(f"checkpoint {path} cannot be read: it is not a torch checkpoint of tensors ({why})") \
                from None
        raise InputError(f"checkpoint {path} cannot be read: {e}") from e
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"checkpoint {path} holds no state dict (a mapping of names to tensors)")
    for prefix in _WRAPPER_PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_checkpoint(model: nn.Module, path: Path) -> list[str]:
    """Load a local checkpoint (.safetensors, or .pt/.pth with weights_only) into `model`.

    Keys whose shapes differ from the model's (a classifier for another class count) are
    skipped, so a checkpoint trained elsewhere can be fine-tuned here. Returns the skipped
    keys; any other mismatch is an InputError naming the file.
    """
    state = read_state_dict(path)
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


def head_keys(model: nn.Module) -> set[str]:
    """The state-dict keys of the model's classifier (timm's get_classifier)."""
    get = getattr(model, "get_classifier", None)
    head = get() if get is not None else None
    if not isinstance(head, nn.Module):
        return set()
    prefix = next((name for name, module in model.named_modules() if module is head), None)
    return set() if prefix is None else {f"{prefix}.{k}" if prefix else k for k in head.state_dict()}


def fitting_state(model: nn.Module, path: Path, arch: str, any_class_count: bool = False) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors, when they fit `model` as trained: every key present with its
    shape, nothing left over (`any_class_count`: the classifier may be for another class
    count, which is checked once the data is known). InputError naming the first missing,
    unexpected or misshapen keys; a classifier for another class count is named as such."""
    state = read_state_dict(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    head = head_keys(model)
    misshapen = [k for k in own if k in state and state[k].shape != own[k].shape
                 and not (any_class_count and k in head)]
    if missing or unexpected:
        raise InputError(f"checkpoint {path} does not fit {arch}: {len(missing)} missing keys (first: {missing[:3]}), "
                         f"{len(unexpected)} unexpected (first: {unexpected[:3]}); is it a checkpoint of {arch}?")
    if misshapen:
        weight = next((k for k in misshapen if k in head and own[k].ndim >= 1), None)
        if weight is not None and all(k in head for k in misshapen):
            raise InputError(f"checkpoint {path}: its classifier ({weight}) has {state[weight].shape[0]} outputs but "
                             f"the data has {own[weight].shape[0]} classes; give the data it was trained on")
        k = misshapen[0]
        raise InputError(f"checkpoint {path} does not fit {arch}: {len(misshapen)} tensors of another shape (first: "
                         f"{k} {tuple(state[k].shape)}, the architecture's {tuple(own[k].shape)})")
    return state


def load_exact(model: nn.Module, path: Path, arch: str) -> None:
    """Load `path` into `model` as trained (`fitting_state`'s checks, then a strict load)."""
    model.load_state_dict(fitting_state(model, path, arch), strict=True)


def pretrained_reachable(arch: str, timeout_s: float = 2.0) -> tuple[bool, str]:
    """Whether timm's published weights for `arch` can be had here, and why: in the local
    Hugging Face hub cache, or from the hub over the network (one connection tried, unless
    HF_HUB_OFFLINE is set: edgekiln.hub_access, which `validate` asks too). Cheap: no download."""
    from edgekiln.hub_access import hub_answers

    timm = timm_registry()
    try:
        hub_id = timm.get_pretrained_cfg(arch).hf_hub_id
    except (AttributeError, RuntimeError):
        hub_id = None
    if not hub_id:
        return False, f"timm publishes no weights for {arch}"
    from huggingface_hub import try_to_load_from_cache

    for filename in ("model.safetensors", "pytorch_model.bin"):
        if isinstance(try_to_load_from_cache(hub_id, filename), str):
            return True, f"{hub_id} is in the local hub cache"
    reachable, why = hub_answers(timeout_s)
    if not reachable:
        return False, f"{hub_id} is not in the local hub cache and {why}"
    return True, f"{hub_id} can be downloaded from the hub"
