"""The configs commands write for the user: `edgekiln compress` builds a full config from its
flags (written beside the run as config.toml, to reproduce or edit it), and `edgekiln init`
writes a commented starter config for an image folder."""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from edgekiln.calibration.images import IMAGE_SUFFIXES
from edgekiln.data.config import class_folders
from edgekiln.errors import InputError

IDX_TRAIN = "train-images-idx3-ubyte"


def data_section(data: Path, image_size: int) -> dict:
    """`[data]` for a folder: MNIST-style IDX files, or class sub-folders of images."""
    data = data.resolve()
    if not data.is_dir():
        raise InputError(f"--data {data}: not a folder (give a folder of class sub-folders, or of IDX files)")
    source = "idx" if any(data.glob(f"{IDX_TRAIN}*")) else "imagefolder"
    return {"source": source, "path": str(data), "image_size": image_size}


@dataclass(frozen=True)
class CompressInput:
    """How `compress` feeds the given model, and where each value came from."""

    image_size: int
    mean: tuple[float, float, float] | None  # None: the architecture's own (timm's, or the image processor's)
    std: tuple[float, float, float] | None
    sources: dict[str, str]

    def summary(self) -> str:
        norm = (f"mean {list(self.mean)} / std {list(self.std)} ({self.sources['mean']})" if self.mean is not None
                else f"mean/std: {self.sources['mean']}")
        return (f"input: {self.image_size} px ({self.sources['image_size']}), {norm}; give --image-size, --mean "
                "and --std if you trained otherwise (the preprocessing check scores the alternatives)")


def model_preprocessing(arch: str | None, weights: Path | None, model: str | None, image_size: int | None,
                        mean: str | None, std: str | None) -> CompressInput:
    """The input compress feeds the given model: the flags, else what the checkpoint records
    (its safetensors metadata, a config.json or preprocessor_config.json beside it), else the
    architecture's defaults."""
    from edgekiln.stages.given import metadata

    if (mean is None) != (std is None):
        raise InputError("give both --mean and --std, or neither")
    try:
        flags = metadata.Preprocessing(image_size, metadata.three(mean, "--mean") if mean else None,
                                       metadata.three(std, "--std") if std else None,
                                       {k: f"--{k.replace('_', '-')}" for k, v in
                                        (("image_size", image_size), ("mean", mean), ("std", std)) if v is not None})
    except ValueError as e:
        raise InputError(str(e)) from None
    hf_dir = Path(model[3:]) if model is not None and Path(model[3:]).is_dir() else None
    chosen = flags.merged(metadata.read(weights, hf_dir))
    sources = dict(chosen.sources)
    size = chosen.image_size
    if size is None:
        size, sources["image_size"] = _default_size(arch, model)
    if chosen.mean is None:
        sources["mean"] = sources["std"] = (f"the image processor of {model}" if model else
                                            f"timm's default for {arch}")
    return CompressInput(int(size), chosen.mean, chosen.std, sources)


def _default_size(arch: str | None, model: str | None) -> tuple[int, str]:
    """The input size a model was most likely trained at, and where that comes from: a
    transformers model's image processor, or timm's default for the architecture."""
    if model is not None:
        from transformers import AutoImageProcessor

        try:
            size = AutoImageProcessor.from_pretrained(model[3:]).size
            value = size.get("height") or size.get("shortest_edge")
            if value:
                return int(value), f"the image processor of {model}"
        except (OSError, ValueError, AttributeError):
            pass
        return 224, "the usual size of transformers image classifiers (no image processor found)"
    import timm

    try:
        size = int(timm.get_pretrained_cfg(arch).input_size[-1])
    except (AttributeError, RuntimeError, TypeError):
        return 224, "the usual ImageNet size (timm has no default for it)"
    return size, f"timm's default for {arch}"


def compress_config(*, arch: str | None, weights: Path | None, model: str | None, data: Path, test_data: Path | None,
                    targets: list[str],
                    budget: float, prune: float | None, allow_estimate: bool, image_size: int,
                    mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
                    check_preprocessing: bool = True, classes: list[str] | None = None) -> dict:
    """The config `edgekiln compress` runs: the given model, quantized (pruned first with
    `prune`, the share of its MACs to keep, recovering by self-distillation until it is back
    within budget) and exported for each target profile, every artifact gated on the test
    split against the given model's own accuracy. Paths are absolute (`relative_to` makes
    them relative to the folder the config is written to)."""
    from edgekiln.targets import get_format
    from edgekiln.targets.profiles import ProfileError, load_profile

    if (model is None) == (arch is None):
        raise InputError("give --arch ARCH with --weights FILE (a timm model), or --model hf:<dir or hub id>")
    if arch is not None and weights is None and not arch.startswith("hf-hub:"):
        raise InputError(f"--arch {arch} needs --weights FILE (your trained weights: .safetensors, .pt or .pth)")
    if model is not None and not model.startswith("hf:"):
        raise InputError(f"--model {model!r}: give a transformers image classifier as hf:<local dir or hub id>")
    if not targets:
        raise InputError("give at least one --target PROFILE (see `edgekiln profile ls`)")
    section = data_section(data, image_size)
    if classes is not None:
        section["classes"] = classes
    fraction = val_fraction_for(_image_count(Path(section["path"]), section["source"]), budget)
    if fraction is not None:
        section["val_fraction"] = fraction
    if test_data is not None:
        if section["source"] != "imagefolder":
            raise InputError("--test-data is for image folders; IDX files hold their own test split (t10k-*)")
        if not test_data.is_dir():
            raise InputError(f"--test-data {test_data}: not a folder")
        section["test_path"] = str(test_data.resolve())
    if model is not None and Path(model[3:]).is_dir():  # a local transformers directory, absolute like the rest
        model = f"hf:{Path(model[3:]).resolve()}"
    model_section = {"arch": model or arch, **({"checkpoint": str(weights.resolve())} if weights else {})}
    if mean is not None:
        model_section.update(mean=list(mean), std=list(std))
    if not check_preprocessing:
        model_section["check_preprocessing"] = False
    config: dict = {"data": section, "model": model_section,
                    "pipeline": {"stages": (["prune"] if prune is not None else []) + ["quantize", "export"]},
                    "budget": {"max_drop_total": budget}}
    if prune is not None:
        # Recovery goes on until the pruned model is back within budget (with a margin), or
        # val stops improving, or the cap.
        config["prune"] = {"macs_ratio": prune, "finetune_epochs": "auto"}
        config["train"] = {"stop_when_within_budget": True}
    formats = {}
    for name in targets:
        try:
            profile = load_profile(name)
        except ProfileError as e:
            raise InputError(f"--target {name}: {e}") from None
        formats.setdefault(profile.format, []).append(profile)
    config["targets"] = []
    for fmt, profiles in formats.items():
        for profile in profiles:
            target = {"name": profile.name, "profile": name_or_path(profile, targets)}
            if len(profiles) > 1:  # two targets of one format: one file each
                target["artifact"] = f"{profile.name}{get_format(fmt).SUFFIX}"
            if allow_estimate:
                target["allow_estimate"] = True
            config["targets"].append(target)
    return config


def val_fraction_for(images: int, budget: float) -> float | None:
    """compress's val share of --data: large enough for val to tell a drop of `budget` from
    none (the pruning recovery and the encoding are decided on it), from the default 0.2 up to
    half of the images; None where the default already resolves it."""
    from edgekiln.stats import images_to_resolve

    if budget <= 0 or images <= 0:
        return None
    wanted = images_to_resolve(budget) / images
    return None if wanted <= 0.2 else round(min(0.5, wanted + 0.005), 2)


def class_names(value: str | None) -> list[str] | None:
    """`--classes`: names comma-separated, or the path of a file with one name per line."""
    if value is None:
        return None
    path = Path(value)
    if path.is_file():
        try:
            names = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"--classes {value}: cannot read it as text ({e})") from None
    else:
        names = [name.strip() for name in value.split(",") if name.strip()]
    if len(names) < 2:
        raise InputError(f"--classes {value!r}: give two class names or more, comma-separated in the order of the "
                         "model's outputs, or a file with one per line")
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise InputError(f"--classes names {', '.join(repr(n) for n in twice)} twice")
    return names


def recorded_classes(weights: Path | None, data: Path) -> list[str] | None:
    """The class order the checkpoint records (timm's `label_names`), when it names exactly the
    data's class folders; else None (sorted folder names, checked by the run's label-order
    check)."""
    from edgekiln.progress import console
    from edgekiln.stages.given import metadata

    found = metadata.label_names(weights)
    if found is None or not Path(data).is_dir():
        return None
    names, where = found
    folders = [d.name for d in class_folders(Path(data))]
    if sorted(names) != folders:
        console.print(f"  classes: {where} names other classes than the folders of {data}; the folders' sorted "
                      "names are used", markup=False)
        return None
    console.print(f"  classes: in the model's output order, from {where}", markup=False)
    return names


def name_or_path(profile, given: list[str]) -> str:
    """How the user named a profile: its shipped name, or the absolute path of its file."""
    return profile.name if profile.name in given else str(Path(profile.path).resolve())


def relative_to(config: dict, folder: Path) -> dict:
    """`compress_config`'s config with its paths relative to `folder`, where it is written
    (OUT/config.toml): a copy committed with its data runs from any checkout. A path that
    shares nothing with `folder` but the root (a system dataset) stays absolute."""
    folder = folder.resolve()

    def rel(path: str) -> str:
        if os.path.commonpath([path, folder]) == folder.anchor:
            return path
        return Path(os.path.relpath(path, folder)).as_posix()

    out = {**config, "data": dict(config["data"]), "model": dict(config["model"]),
           "targets": [dict(t) for t in config.get("targets", [])]}
    for section, key in (("data", "path"), ("data", "test_path"), ("model", "checkpoint")):
        if key in out[section]:
            out[section][key] = rel(out[section][key])
    arch = out["model"].get("arch", "")
    if arch.startswith("hf:") and Path(arch[3:]).is_absolute():  # a local transformers directory
        out["model"]["arch"] = "hf:" + rel(arch[3:])
    for target in out["targets"]:
        if Path(target["profile"]).is_absolute():  # a profile file, not a shipped name
            target["profile"] = rel(target["profile"])
    return out


def to_toml(config: dict, header: str = "") -> str:
    """`config` as TOML, its targets as [[targets]] tables at the end (as people write them)."""
    rest = {k: v for k, v in config.items() if k != "targets"}
    targets = "".join(f"\n[[targets]]\n{tomli_w.dumps(t)}" for t in config.get("targets", []))
    return header + tomli_w.dumps(rest) + targets


BUDGET = 1.5  # init's max_drop_total: points


def split_for(images: int, budget: float) -> dict:
    """val and test fractions for `images` images, the test split large enough (within 10-30 %)
    to tell a drop of `budget` points from none, and a line saying what it resolves."""
    from edgekiln.stats import images_to_resolve, smallest_resolvable_drop

    wanted = images_to_resolve(budget)  # test images for which 6 images are `budget` points
    test = min(0.3, max(0.1, round(wanted / max(images, 1) + 0.005, 2)))
    n_test = int(images * test)
    smallest = smallest_resolvable_drop(n_test)
    why = (f"{n_test} test images: one is {100 / max(n_test, 1):.2f} points, and the smallest drop they tell from "
           f"none is {smallest:.2f} points")
    if smallest > budget:
        why += (f", more than max_drop_total = {budget:g}: add images (about {int(wanted / 0.3)} in all), or "
                f"loosen the budget to {smallest:.1f}")
    return {"val_fraction": 0.2, "test_fraction": test, "why": why}


def _image_count(data: Path, source: str) -> int:
    """How many images the folder holds (IDX: its training file's count)."""
    if source == "idx":
        from edgekiln.data import idx_files

        found = idx_files.find(data, "train", "images")
        return 0 if found is None else int(idx_files.read(found, "data.path").shape[0])
    return sum(1 for f in data.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()
               and not any(p.startswith(".") for p in f.relative_to(data).parts))


def _teacher_lines() -> str:
    """[teacher]'s candidates and `pretrained`: timm's published weights where they can be had
    here (hub cache or network), trained from scratch where not, saying so and what it costs."""
    from edgekiln.training.modeling import pretrained_reachable

    reachable, why = pretrained_reachable("resnet18")
    if reachable:
        return ('candidates = ["resnet18", "convnext_atto"]\n'
                f"pretrained = true   # ImageNet weights: {why}")
    return ('candidates = ["resnet14t", "resnet10t"]\n'
            f"pretrained = false  # {why}\n"
            "# The teachers train from scratch here, as in every figure of BENCHMARKS.md; ImageNet weights\n"
            "# usually help most on small data: set true (and resnet18, convnext_atto) where they download")


def starter_config(data: Path) -> str:
    """A commented starter config for the image folder `data`: its classes counted, an image
    size suggested from a sample of its images, the shipped profiles listed as targets."""
    from edgekiln.data.native_size import folder_short_sides, native_size
    from edgekiln.targets.profiles import load_profile, shipped_profiles

    data = data.resolve()
    section = data_section(data, 32)
    if section["source"] == "idx":
        classes, sizes = None, [native_size("idx", data) or 28]
    else:
        classes = [d.name for d in class_folders(data)]
        if len(classes) < 2:
            raise InputError(f"{data}: needs at least two class sub-folders (one per class), found {classes}")
        sizes = folder_short_sides(data)
        if not sizes:
            raise InputError(f"{data}: no readable images in its class folders")
    native = statistics.median(sizes)
    suggested = max(32, min(224, int(native) // 8 * 8))
    profiles = []
    for name in shipped_profiles():
        p = load_profile(name)
        how = "estimates" if p.runner.kind == "estimate" else f"measures ({p.runner.kind})"
        profiles.append(f"#   {name:24} {p.format:10} {how}: {p.device}")
    counted = f"{len(classes)} classes: {', '.join(classes[:8])}{', ...' if len(classes) > 8 else ''}" \
        if classes else "MNIST-style IDX files"
    images = _image_count(data, section["source"])
    split = split_for(images, BUDGET)
    teacher = _teacher_lines()
    return f'''# edgekiln starter config for {data}
# ({counted}; {images} images).
# Run it with `edgekiln run THIS_FILE`; `edgekiln validate THIS_FILE` checks it.
# To compress a model you already trained instead, see `edgekiln compress --help`.
# Its recipe (teachers, students, schedules) was chosen on the digits and Fashion-MNIST and
# checked on colour icons it was not chosen on: BENCHMARKS.md, "A first run on your own images".

[pipeline]
# How long: on 2 CPU cores this recipe took 2 to 4 minutes on 1,800-4,000 images at 8-32 px
# (BENCHMARKS.md); `edgekiln run THIS_FILE --plan` estimates this config on this machine.
# max_minutes = 20  # a time budget: each stage stops at its share, keeping its best so far

[data]
source = "{section["source"]}"
path = "{data}"
# The images' median short side is {native:g} px; larger trains slower and is more accurate.
image_size = {suggested}
val_fraction = {split["val_fraction"]}   # decisions (teacher, student, pruning steps) are made on val
test_fraction = {split["test_fraction"]}  # held out: the release gates are judged on it
# {split["why"]}

[teacher]
{teacher}
epochs = "auto"    # until val stops improving (patience 4), at most max_epochs
max_epochs = 40

[student]
# Narrow ResNet-10s (a quarter to a half of its width): on a few thousand images they distil
# within 1.5 points where MobileNetV3 and MobileViT students lost about 10 (BENCHMARKS.md).
arch = ["resnet10t_w24", "resnet10t_w32"]  # searched; the smallest within budget wins
epochs = "auto"
max_epochs = 40

[prune]
macs_ratio = 0.85  # keep 85% of the student's MACs
steps = 2
finetune_epochs = "auto"
max_epochs = 12

[quantize]
mode = "ptq"       # or "qat"

[budget]
max_drop_total = {BUDGET:g}  # accuracy points any artifact may lose against the teacher (on test)

# One [[targets]] per device; the shipped profiles (`edgekiln profile ls`):
{chr(10).join(profiles)}
# A mid-range phone's single big core: the cautious gate, and one whose estimates decide
# (published INT8 and float tables, BENCHMARKS.md); pixel-6-cpu's INT8 is an order of magnitude.
[[targets]]
name = "android"
profile = "android-midrange-cpu"
allow_estimate = true  # no phone attached: estimate its latency (the report says so)

[[targets]]
name = "server"
profile = "x86-server-avx2"
'''
