"""The stages' config sections ([data], [teacher], [student], [train], [distill], [prune],
[quantize]): schemas only. Like the rest of the config schema (pipeline/config.py,
targets/target.py) this module imports neither torch nor a converter, so a config is
validated in well under two seconds (`edgekiln validate`). Checks that need torch (timm
architecture names, a RandAugment string) are the stages' preflights, run before any work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, field_validator, model_validator

from edgekiln.stages import schedule as schedules
from edgekiln.targets.int8 import Int8Options

# A training loop's length: a number of epochs, or "auto" (stages/schedule.py): until the val
# accuracy stops improving, within `max_epochs` and `max_minutes`.
def _epochs(value):
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 1000):
        return value
    raise ValueError(f'must be "auto" or a whole number of epochs from 0 to 1000, not {value!r}')


Epochs = Annotated[int | Literal["auto"], PlainValidator(_epochs)]


# The stages `[budget.max_drop]` may limit, each against the stage before it. The one
# declaration: the config's schema and the graph's nodes both read it.
BUDGETED_STAGES = ("distill", "prune", "quantize", "export")


def local_shard(url: str) -> Path | None:
    """The local file a shard names (a path, or file:PATH); None for a URL that another
    program opens (pipe:, https:, gs:, ...)."""
    if url.startswith("file:"):
        return Path(url[5:])
    return None if ":" in url.split("/")[0] else Path(url)


def expand_shards(spec: str | list[str]) -> list[str]:
    """The shards a brace pattern, a `::`-separated list or a list of them names."""
    from braceexpand import braceexpand

    items = [spec] if isinstance(spec, str) else spec
    return [url for item in items for part in item.split("::") for url in braceexpand(part)]


class DataConfig(BaseModel):
    """`[data]`: where the images come from and how they are split."""

    model_config = ConfigDict(extra="forbid")

    # idx: a folder of MNIST-style IDX files (train-*, and t10k-* as the test split)
    source: Literal["digits", "imagefolder", "webdataset", "idx"] = "digits"
    path: Path | None = None
    val_path: Path | None = None
    test_path: Path | None = None
    # webdataset: each split's shards, a brace pattern ("train-{000..099}.tar") or a list of
    # paths or URLs; samples are `<key>.jpg` (or png, webp...) with `<key>.cls`, the class
    # index. Val and test are their own shards (nothing is carved from a stream); no
    # test_shards: no test split.
    shards: str | list[str] | None = None
    val_shards: str | list[str] | None = None
    test_shards: str | list[str] | None = None
    classes: list[str] | None = None  # webdataset, idx: the name of each class index (default "0", "1", ...)
    # webdataset: an epoch reads the shards in a random order through a buffer of this many
    # samples (encoded), shuffled within it: larger mixes better and holds more in memory.
    shuffle_buffer: int = Field(5000, ge=1, le=10_000_000)
    image_size: int = Field(32, ge=16, le=1024)
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    # Share of the images held out for the final figures (release gate); 0 with no
    # test_path: no test split, and the manifest says its figures are graded on val.
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    seed: int = 0
    max_samples: int | None = Field(None, ge=20)
    # Image folders: true leaves the training images on disk, decoded batch by batch by
    # `num_workers` processes, so memory does not grow with their number; unset streams a
    # training split that would take more than STREAM_ABOVE_BYTES decoded. Val and test are
    # decoded into memory either way: every evaluation reads them whole.
    streaming: bool | None = None
    num_workers: int | None = Field(None, ge=0, le=64)  # default: one per core but one, up to 8
    # Image folders: an image with more pixels than this stops the run before any work (read
    # from its header, never decoded); the default is Pillow's own decompression-bomb limit.
    max_image_pixels: int = Field(89_478_485, ge=1)
    # Image folders: a class folder or image that is a link to somewhere outside the folder is
    # refused unless this is true.
    follow_symlinks: bool = False

    @model_validator(mode="after")
    def _paths_fit_source(self) -> "DataConfig":
        if self.source == "imagefolder" and self.path is None:
            raise ValueError("source 'imagefolder' needs `path` (a folder of class sub-folders)")
        if self.source == "idx" and self.path is None:
            raise ValueError("source 'idx' needs `path` (a folder with train-images-idx3-ubyte[.gz] and "
                             "train-labels-idx1-ubyte[.gz], and t10k-* for the test split)")
        if self.source == "idx" and (self.val_path or self.test_path or self.streaming):
            raise ValueError("source 'idx' takes no `val_path`, `test_path` or `streaming`: val is carved from the "
                             "train files, the test split is the t10k files beside them (else carved too), and "
                             "the images are held in memory")
        if self.source == "digits" and (self.path or self.val_path or self.test_path):
            raise ValueError("source 'digits' takes no `path`, `val_path` or `test_path`")
        if self.source == "digits" and self.streaming:
            raise ValueError("streaming = true needs source 'imagefolder' or 'webdataset': the digits are 1,797 "
                             "images in memory")
        if self.source == "webdataset":
            self._fits_shards()
        elif self.shards or self.val_shards or self.test_shards:
            raise ValueError(f"source '{self.source}' takes no `shards`, `val_shards` or `test_shards` "
                             "(those are for source 'webdataset')")
        elif self.classes and self.source != "idx":
            raise ValueError(f"source '{self.source}' takes no `classes` (the class names are its folders' or "
                             "its own)")
        carved = (0.0 if self.val_path else self.val_fraction) + (0.0 if self.test_path else self.test_fraction)
        if carved >= 0.9:
            raise ValueError(f"val_fraction + test_fraction = {carved:g} leaves under 10% of the images to train on")
        return self

    def _fits_shards(self) -> None:
        if not self.shards or not self.val_shards:
            raise ValueError("source 'webdataset' needs `shards` and `val_shards` (the training and validation shards)")
        unread = [k for k in ("path", "val_path", "test_path", "max_samples") if getattr(self, k) is not None]
        if unread:
            raise ValueError(f"{', '.join(unread)}: not read with source 'webdataset' (each split is its own shards; "
                             "val_fraction and test_fraction are not read either)")


class TeacherCandidate(BaseModel):
    """A candidate given as a table: an architecture and, optionally, local weights."""

    model_config = ConfigDict(extra="forbid")

    arch: str
    checkpoint: Path | None = None

    @property
    def name(self) -> str:
        return f"{self.arch}@{self.checkpoint.name}" if self.checkpoint else self.arch


class TeacherConfig(BaseModel):
    """`[teacher]`: candidates are timm names, `hf-hub:` timm ids, `hf:` transformers
    checkpoints (hub id or local directory), or {arch, checkpoint} tables."""

    model_config = ConfigDict(extra="forbid")

    candidates: list[str | TeacherCandidate] = Field(min_length=1)
    pretrained: bool = False
    epochs: Epochs = 5
    max_epochs: int = Field(50, ge=1, le=1000)  # epochs = "auto": the cap (and the span of its LR schedule)
    max_minutes: float | None = Field(None, gt=0)  # epochs = "auto": stop a candidate after this long
    lr: float = Field(3e-3, gt=0.0)
    image_size: int | None = Field(None, ge=16, le=1024)  # default: see `input_size` below
    select: Literal["accuracy", "accuracy_per_gflop"] = "accuracy"
    max_macs: float | None = Field(None, gt=0)  # per image, e.g. 5e9
    max_latency_ms: float | None = Field(None, gt=0)  # host, batch 1, torch on the CPU
    ensemble: int = Field(1, ge=1, le=16)

    def resolved(self) -> list[TeacherCandidate]:
        return [c if isinstance(c, TeacherCandidate) else TeacherCandidate(arch=c) for c in self.candidates]


class TrainConfig(BaseModel):
    """`[train]`: the recipe every training loop uses (teacher fine-tune, distillation,
    pruning recovery). Epochs and learning rates stay in each stage's own section."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(64, ge=2, le=4096)
    weight_decay: float = Field(0.05, ge=0.0)
    warmup_epochs: float = Field(1.0, ge=0.0)
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    ema_decay: float | None = Field(None, gt=0.0, lt=1.0)
    randaugment: str | None = None  # a timm RandAugment string, e.g. "rand-m9-mstd0.5"
    mixup: float = Field(0.0, ge=0.0)  # Beta(alpha, alpha) of mixup; 0 = off
    cutmix: float = Field(0.0, ge=0.0)  # Beta(alpha, alpha) of cutmix; 0 = off
    # Random translation of up to this share of the image size each way (edges replicated),
    # applied per image on the device: cheap, and the augmentation small images need most.
    translate: float = Field(0.0, ge=0.0, le=0.5)
    hflip: bool = False  # random horizontal flips (not for digits or text)
    # Training forward passes under bf16 autocast (weights, gradients and optimizer state stay
    # float32), and the channels_last memory layout: for tensor-core GPUs. Off by default:
    # neither is measured on a GPU yet (BENCHMARKS.md); on the CPU both run, slowly.
    autocast: Literal["none", "bf16"] = "none"
    channels_last: bool = False
    # epochs = "auto": stop after `patience` epochs without a val improvement of more than
    # `min_delta` points, keeping the best epoch's weights.
    patience: int = Field(schedules.PATIENCE, ge=1, le=100)
    min_delta: float = Field(schedules.MIN_DELTA, ge=0.0, le=10.0)
    # epochs = "auto" in student loops (distillation, pruning recovery, QAT): also stop as soon
    # as the val accuracy is within the stage's budget less `within_budget_margin` points.
    stop_when_within_budget: bool = False
    within_budget_margin: float = Field(schedules.WITHIN_BUDGET_MARGIN, ge=0.0)

    @property
    def deterministic_inputs(self) -> bool:
        """Every epoch feeds the same images: a teacher's outputs can be computed once."""
        return (self.randaugment is None and self.mixup == 0.0 and self.cutmix == 0.0
                and self.translate == 0.0 and not self.hflip)


class DistillConfig(BaseModel):
    """`[distill]`: loss = (1 - alpha) * CE + alpha * T^2 * KL(teacher || student)
    [+ feature_weight * MSE(hint(student features), teacher features) with FitNets]."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(4.0, gt=0.0)
    alpha: float = Field(0.9, ge=0.0, le=1.0)
    feature_loss: Literal["none", "fitnets"] = "none"
    feature_weight: float = Field(1.0, ge=0.0)


class StudentConfig(BaseModel):
    """`[student]`: the mobile architecture to distil into (a timm name), or a list of
    candidates searched by successive halving and chosen by `select`."""

    model_config = ConfigDict(extra="forbid")

    arch: str | list[str] = "mobilenetv3_small_050"
    pretrained: bool = False
    epochs: Epochs = 10
    max_epochs: int = Field(100, ge=1, le=1000)  # epochs = "auto": the cap
    max_minutes: float | None = Field(None, gt=0)  # epochs = "auto": stop the chosen student after this long
    lr: float = Field(3e-3, gt=0.0)
    # Among the candidates within budget.max_drop_total of the teacher (val): "smallest"
    # (fewest INT8 weight bytes), "fastest" (INT8 latency estimated on `profile`), or
    # "accuracy" (the most accurate); none within budget: the most accurate.
    select: Literal["accuracy", "smallest", "fastest"] = "smallest"
    profile: str | None = None  # with select = "fastest": a profile with an [estimate] table

    @field_validator("arch")
    @classmethod
    def _distinct(cls, v):
        if isinstance(v, list):
            if not v:
                raise ValueError("give at least one architecture")
            if len(set(v)) != len(v):
                raise ValueError("lists an architecture twice")
        return v

    @model_validator(mode="after")
    def _profile_for_fastest(self) -> "StudentConfig":
        if self.select == "fastest" and self.profile is None:
            raise ValueError("select = 'fastest' needs `profile` (the device whose latency decides)")
        if self.profile is not None and self.select != "fastest":
            raise ValueError("profile is only read with select = 'fastest'")
        return self

    @property
    def candidates(self) -> list[str]:
        return [self.arch] if isinstance(self.arch, str) else list(self.arch)


class PruneConfig(BaseModel):
    """`[prune]`: how far to prune the student, and how.

    The target is `macs_ratio` (share of the student's MACs to keep), or `latency_ms` on
    `profile`: estimated by the profile's cost model at each step, or with `measure` the
    p50 of the step's INT8 artifact timed by the profile's runner (host, adb or ssh). With `steps` > 1 the
    target is approached in equal steps, each followed by a KD recovery fine-tune of
    `finetune_epochs`; a step whose accuracy breaks the budget ([budget]: max_drop.prune
    against the distilled student, max_drop_total against the teacher) is undone, and
    pruning stops at the last step that held."""

    model_config = ConfigDict(extra="forbid")

    macs_ratio: float | None = Field(None, gt=0.0, le=1.0)  # default 0.5 when no latency target
    latency_ms: float | None = Field(None, gt=0.0)
    profile: str | None = None
    measure: bool = False  # time each step's INT8 artifact on the profile's runner instead of estimating
    steps: int = Field(1, ge=1, le=50)
    importance: Literal["magnitude", "taylor"] = "magnitude"
    finetune_epochs: Epochs = 3
    max_epochs: int = Field(30, ge=1, le=1000)  # finetune_epochs = "auto": the cap per step
    max_minutes: float | None = Field(None, gt=0)  # finetune_epochs = "auto": per step
    lr: float = Field(1e-3, gt=0.0)

    @model_validator(mode="after")
    def _one_target(self) -> "PruneConfig":
        if self.latency_ms is not None and self.macs_ratio is not None:
            raise ValueError("give macs_ratio or latency_ms, not both")
        if (self.latency_ms is None) != (self.profile is None):
            raise ValueError("latency_ms and profile go together (the latency is estimated on that profile)")
        if self.measure and self.latency_ms is None:
            raise ValueError("measure needs a latency target (latency_ms and profile)")
        if self.latency_ms is None and self.macs_ratio is None:
            self.macs_ratio = 0.5
        return self


class QuantizeConfig(BaseModel):
    """`[quantize]`: how the student becomes INT8."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["ptq", "qat"] = "ptq"
    epochs: Epochs = 3  # QAT fine-tuning epochs
    max_epochs: int = Field(10, ge=1, le=1000)  # epochs = "auto": the cap
    max_minutes: float | None = Field(None, gt=0)
    lr: float = Field(5e-4, gt=0.0)  # QAT learning rate (a tenth of the student's, typically)
    calibration_samples: int = Field(256, ge=1, le=100_000)
    calibration_path: Path | None = None  # folder of unlabelled images; default: the train split
    calibrator: Literal["minmax", "entropy", "percentile"] = "minmax"
    per_channel: bool = True
    # When an INT8 artifact misses its accuracy budget, keep its most quantization-sensitive
    # layers in float, one at a time, until it holds (formats that can mix precisions).
    accuracy_aware: bool = True

    def options(self) -> Int8Options:
        return Int8Options(calibrator=self.calibrator, per_channel=self.per_channel)
