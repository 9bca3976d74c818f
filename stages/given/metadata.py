"""What a checkpoint says about its own input: size, mean and std, read from the places
training tools leave them, each value with where it came from.

- safetensors metadata in the weights file (`input_size` or `image_size`, `mean`, `std`; JSON
  or comma-separated strings, as `save_file(..., metadata=)` stores them);
- a timm `config.json` beside the weights (`pretrained_cfg` with `input_size`, `mean`, `std`,
  as `timm.models.push_to_hf_hub` writes it; the same keys at the top level are read too);
- a transformers `preprocessor_config.json` beside the weights or in an `hf:` directory
  (`size`, `image_mean`, `image_std`, `do_normalize`, `do_rescale`, `rescale_factor`).

Torch-free: `edgekiln compress` reads it before anything is loaded."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from edgekiln.errors import InputError


@dataclass(frozen=True)
class Preprocessing:
    """A classifier's input as far as something says so; None where nothing does."""

    image_size: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    # value name ("image_size", "mean", "std") -> where it came from ("config.json beside ...")
    sources: dict[str, str] = field(default_factory=dict)

    def merged(self, other: "Preprocessing") -> "Preprocessing":
        """Each value from self where it has one, else from `other`."""
        pick = {}
        for name in ("image_size", "mean", "std"):
            mine = getattr(self, name)
            pick[name] = mine if mine is not None else getattr(other, name)
        sources = {**{k: v for k, v in other.sources.items() if getattr(self, k) is None}, **self.sources}
        return Preprocessing(**pick, sources=sources)


def three(value, what: str) -> tuple[float, float, float]:
    """One value or three (per RGB channel) as a 3-tuple of floats; ValueError naming `what`."""
    if isinstance(value, str):
        text = value.strip()
        value = json.loads(text) if text.startswith("[") else [float(v) for v in text.split(",")]
    values = [float(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise ValueError(f"{what}: give one value or three (R, G, B), got {len(values)}")
    return tuple(values)  # type: ignore[return-value]


def _size(value) -> int | None:
    """An input size given as 32, [3, 32, 32], {"height": 32, ...} or {"shortest_edge": 32}."""
    if isinstance(value, str):
        value = json.loads(value) if value.strip()[:1] in "[{" else int(value)
    if isinstance(value, dict):
        value = value.get("height") or value.get("shortest_edge")
    if isinstance(value, (list, tuple)):
        value = value[-1] if value else None
    return int(value) if value else None


def _from_values(values: dict, where: str, size_keys=("input_size", "image_size"), mean_key="mean",
                 std_key="std") -> Preprocessing:
    size = next((_size(values[k]) for k in size_keys if values.get(k) is not None), None)
    mean = three(values[mean_key], f"{where}: {mean_key}") if values.get(mean_key) is not None else None
    std = three(values[std_key], f"{where}: {std_key}") if values.get(std_key) is not None else None
    sources = {name: where for name, v in (("image_size", size), ("mean", mean), ("std", std)) if v is not None}
    return Preprocessing(size, mean, std, sources)


def _safetensors(path: Path) -> Preprocessing:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            values = f.metadata() or {}
    except Exception:  # not a safetensors file: the loader says so with its own error
        return Preprocessing()
    return _from_values(values, f"the metadata of {path.name}")


def _timm_config(path: Path) -> Preprocessing:
    values = _json(path)
    inner = values.get("pretrained_cfg") if isinstance(values.get("pretrained_cfg"), dict) else {}
    return _from_values(inner, f"{path.name}'s pretrained_cfg").merged(_from_values(values, path.name))


def _processor(path: Path) -> Preprocessing:
    values = _json(path)
    where = path.name
    found = _from_values(values, where, size_keys=("size", "crop_size"), mean_key="image_mean", std_key="image_std")
    if values.get("crop_size") is not None and values.get("do_center_crop", True):
        found = Preprocessing(_size(values["crop_size"]), found.mean, found.std, found.sources)
    # A processor that does not normalize feeds [0, 1] (mean 0, std 1); one that does not
    # rescale either feeds [0, 255]: both are mean/std a model bundle can carry.
    scale = float(values.get("rescale_factor", 1 / 255)) if values.get("do_rescale", True) else 1.0
    mean, std = found.mean, found.std
    if values.get("do_normalize") is False:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if abs(scale * 255 - 1) > 1e-6 and mean is not None:
        # edgekiln feeds pixel / 255: a rescale by s is std scaled by 1 / (255 s)
        factor = 1.0 / (255 * scale)
        mean = tuple(m * factor for m in mean)
        std = tuple(s * factor for s in std)
    sources = dict(found.sources)
    if mean is not None:
        sources.update(mean=where, std=where)
    return Preprocessing(found.image_size, mean, std, sources)


def _json(path: Path) -> dict:
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: cannot read it as JSON ({e}); fix or remove it, since it describes your "
                         "model's input") from None
    if not isinstance(values, dict):
        raise InputError(f"{path}: expected a JSON object describing your model's input")
    return values


def read(checkpoint: Path | None = None, hf_dir: Path | None = None) -> Preprocessing:
    """What the checkpoint file (its own metadata first, then the files beside it) or a
    transformers directory says about the model's input."""
    found = Preprocessing()
    try:
        if checkpoint is not None and Path(checkpoint).is_file():
            checkpoint = Path(checkpoint)
            if checkpoint.suffix == ".safetensors":
                found = found.merged(_safetensors(checkpoint))
            if (checkpoint.parent / "config.json").is_file():
                found = found.merged(_timm_config(checkpoint.parent / "config.json"))
            if (checkpoint.parent / "preprocessor_config.json").is_file():
                found = found.merged(_processor(checkpoint.parent / "preprocessor_config.json"))
        if hf_dir is not None and (Path(hf_dir) / "preprocessor_config.json").is_file():
            found = found.merged(_processor(Path(hf_dir) / "preprocessor_config.json"))
    except (ValueError, TypeError) as e:
        raise InputError(f"the preprocessing recorded beside your model cannot be read: {e}") from None
    return found


def label_names(checkpoint: Path | None) -> tuple[list[str], str] | None:
    """The class names in the order of the model's outputs, where the checkpoint records them:
    `label_names` in timm's config.json beside it (top level or its pretrained_cfg), and where
    that came from; else None."""
    if checkpoint is None or not (Path(checkpoint).parent / "config.json").is_file():
        return None
    path = Path(checkpoint).parent / "config.json"
    values = _json(path)
    inner = values.get("pretrained_cfg") if isinstance(values.get("pretrained_cfg"), dict) else {}
    names = values.get("label_names") or inner.get("label_names")
    if not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, str) for n in names):
        return None
    return names, f"label_names in {path}"

