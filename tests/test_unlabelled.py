"""Unlabelled images in distillation ([data] unlabelled_path): they join the training images
of the loops with a teacher with the KD term only, never val or test, and bad folders are
bad input naming the key."""

import numpy as np
import pytest
import torch
from PIL import Image

from edgekiln.data import unlabelled
from edgekiln.data.config import DataConfig
from edgekiln.data.dataset import load_dataset
from edgekiln.training.trainer import hard_loss


def write_images(folder, count, size=20, seed=0):
    rng = np.random.default_rng(seed)
    for i in range(count):
        path = folder / f"batch{i % 2}" / f"frame{i}.png"  # nested folders: any layout
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return folder


def test_the_hard_loss_ignores_unlabelled_images_and_a_batch_of_them_has_none():
    out = torch.randn(4, 3, requires_grad=True)
    labelled = hard_loss(out[:2], torch.tensor([0, 2]))
    mixed = hard_loss(out, torch.tensor([0, 2, unlabelled.NO_LABEL, unlabelled.NO_LABEL]))
    torch.testing.assert_close(mixed, labelled)
    none = hard_loss(out, torch.full((4,), unlabelled.NO_LABEL))
    assert float(none) == 0.0 and none.requires_grad


def test_unlabelled_images_join_training_only_and_val_or_test_files_are_left_out(tmp_path):
    root = tmp_path / "labelled"
    for label in ("a", "b"):
        write_images(root / label, 10, seed=ord(label))
    data = load_dataset(DataConfig(source="imagefolder", path=root, image_size=16, val_fraction=0.2,
                                   test_fraction=0.2, seed=0))
    # the unlabelled folder is the labelled one: its val and test files must not come back
    with_all = load_dataset(DataConfig(source="imagefolder", path=root, image_size=16, val_fraction=0.2,
                                       test_fraction=0.2, seed=0, unlabelled_path=root))
    held = data.splits["val"]["count"] + data.splits["test"]["count"]
    assert with_all.unlabelled == {"path": str(root), "images": 20 - held, "left_out": held,
                                   "why_left_out": "also val or test images",
                                   "used_by": "distillation and pruning recovery, KD term only"}
    torch.testing.assert_close(with_all.val_x, data.val_x)
    torch.testing.assert_close(with_all.test_x, data.test_x)
    joined = unlabelled.joined(with_all)
    assert len(joined.train_y) == len(data.train_y) + 20 - held
    assert (joined.train_y[len(data.train_y):] == unlabelled.NO_LABEL).all()
    assert with_all.fingerprint != data.fingerprint  # the distilled stages re-run when the folder changes


@pytest.mark.parametrize("make, message", [
    (lambda p: p.mkdir(), "holds no images"),
    (lambda p: p.write_text("x"), "is not a folder"),
])
def test_an_unlabelled_folder_without_images_is_exit_2_naming_the_key(tmp_path, make, message):
    from typer.testing import CliRunner

    from edgekiln.interfaces.cli import app

    folder = tmp_path / "frames"
    make(folder)
    config = tmp_path / "c.toml"
    config.write_text(f'[data]\nsource = "digits"\nunlabelled_path = "{folder}"\n[teacher]\ncandidates = ["resnet10t"]\n'
                      '[[targets]]\nname = "s"\nformat = "onnx"\n')
    result = CliRunner().invoke(app, ["validate", str(config)])
    assert result.exit_code == 2 and f"data.unlabelled_path (line 3): {folder} {message}" in result.stderr, result.output


def test_mixup_with_unlabelled_images_is_a_config_error(tmp_path):
    from edgekiln.engine.config import ConfigError, load_config

    config = tmp_path / "c.toml"
    config.write_text(f'[data]\nsource = "digits"\nunlabelled_path = "{tmp_path}"\n[train]\nmixup = 0.2\n'
                      '[teacher]\ncandidates = ["resnet10t"]\n[[targets]]\nname = "s"\nformat = "onnx"\n')
    with pytest.raises(ConfigError, match="mixup and train.cutmix mix labels"):
        load_config(config)


def test_many_unlabelled_images_are_read_from_disk_beside_labelled_ones_in_memory(tmp_path, monkeypatch):
    from edgekiln.data import dataset

    frames = write_images(tmp_path / "frames", 6, size=20)
    monkeypatch.setattr(dataset, "STREAM_ABOVE_BYTES", 100)  # six 16 px images are "large" here
    data = load_dataset(DataConfig(source="digits", image_size=16, max_samples=100, unlabelled_path=frames))
    assert isinstance(data.train_x, torch.Tensor) and not isinstance(data.unlabelled_x, torch.Tensor)
    joined = unlabelled.joined(data)
    n = len(data.train_y)
    assert joined.train_x.shape == (n + 6, 3, 16, 16)
    batch = joined.train_x[torch.tensor([0, n, n + 5])]
    torch.testing.assert_close(batch[0], data.train_x[0])
    torch.testing.assert_close(batch[1:], data.unlabelled_x[torch.tensor([0, 5])])


def test_an_unreadable_unlabelled_image_is_bad_input_naming_the_file(tmp_path):
    from edgekiln.errors import InputError

    frames = write_images(tmp_path / "frames", 2)
    (frames / "broken.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="data.unlabelled_path: .*broken.png"):
        load_dataset(DataConfig(source="digits", image_size=16, max_samples=100, unlabelled_path=frames))


def write_unlabelled_shards(directory, name, count, per_shard, seed=0):
    """WebDataset shards of `count` images with no `.cls`; returns the brace pattern."""
    import io

    import webdataset as wds

    rng = np.random.default_rng(seed)
    n_shards = -(-count // per_shard)
    for s in range(n_shards):
        with wds.TarWriter(str(directory / f"{name}-{s:03d}.tar")) as sink:
            for i in range(s * per_shard, min(count, (s + 1) * per_shard)):
                out = io.BytesIO()
                Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(out, format="PNG")
                sink.write({"__key__": f"{name}{i:05d}", "png": out.getvalue()})
    return str(directory / f"{name}-{{000..{n_shards - 1:03d}}}.tar")


def _served_in_order(data, shuffle_buffer=8):
    """An epoch's order of the joined split, and its batches read as training reads them."""
    from edgekiln.data.image_files import batches

    joined = unlabelled.joined(data)
    order = joined.epoch_order(torch.Generator().manual_seed(0))
    index_batches = list(order.split(7))
    return joined, order, torch.cat(list(batches(joined.train_x, index_batches)))


def test_unlabelled_shards_without_labels_join_shard_training_and_shared_val_samples_are_left_out(tmp_path):
    from test_shards import write_shards

    labelled = {"shards": write_shards(tmp_path, "train", 30, 8, 0), "val_shards": write_shards(tmp_path, "val", 12, 6, 1)}
    extra = write_unlabelled_shards(tmp_path, "frames", 20, 6)
    val_files = sorted(str(p) for p in tmp_path.glob("val-*.tar"))
    for streaming in (True, False):
        data = load_dataset(DataConfig(source="webdataset", image_size=16, classes=["r", "g", "b"], shuffle_buffer=8,
                                       streaming=streaming, **labelled, unlabelled_shards=[extra.replace("{000..003}", s)
                                                                                for s in ("000", "001", "002", "003")]
                                       + val_files), index_dir=tmp_path / "index")
        # the val shards given again as unlabelled: their 12 samples are val images, left out
        assert data.unlabelled == {"shards": data.unlabelled["shards"], "shard_files": 6, "images": 20,
                                   "left_out": 12, "why_left_out": "also val or test images",
                                   "used_by": "distillation and pruning recovery, KD term only"}
        joined, order, served = _served_in_order(data)
        assert sorted(order.tolist()) == list(range(50))  # every labelled and unlabelled image, once
        assert (joined.train_y[30:] == unlabelled.NO_LABEL).all() and (joined.train_y[:30] >= 0).all()
        unl = data.unlabelled_x if isinstance(data.unlabelled_x, torch.Tensor) else data.unlabelled_x.load()
        train = data.train_x if isinstance(data.train_x, torch.Tensor) else data.train_x.load()
        torch.testing.assert_close(served, torch.cat([train, unl])[order])
    # a shard pass per part, not per image: the unlabelled shards are visited in runs
    runs = sum(1 for a, b in zip(order.tolist(), order.tolist()[1:]) if (a < 30) != (b < 30))
    assert runs < 25


def test_many_unlabelled_shard_images_stream_beside_labelled_ones_in_memory(tmp_path, monkeypatch):
    from edgekiln.data import dataset, shards

    extra = write_unlabelled_shards(tmp_path, "frames", 18, 5)
    monkeypatch.setattr(dataset, "STREAM_ABOVE_BYTES", 100)
    data = load_dataset(DataConfig(source="digits", image_size=16, max_samples=100, streaming=False,
                                   unlabelled_shards=extra))
    assert isinstance(data.train_x, torch.Tensor) and isinstance(data.unlabelled_x, shards.ShardImages)
    joined, order, served = _served_in_order(data)
    n = len(data.train_y)
    assert sorted(order.tolist()) == list(range(n + 18)) and joined.shard_layout is not None
    torch.testing.assert_close(served, torch.cat([data.train_x, data.unlabelled_x.load()])[order])
    # one epoch of distillation reads them all, the teacher's outputs computed once for each
    from edgekiln.training import distillation, modeling, trainer
    from edgekiln.training.config import DistillConfig, TrainConfig

    model = modeling.create("resnet10t", data.num_classes, seed=0, image_size=16)
    teacher = distillation.Teacher([modeling.bundle("resnet10t", model, data.num_classes, 16, source="test")])
    student = modeling.bundle("resnet10t", modeling.create("resnet10t", data.num_classes, seed=1, image_size=16),
                              data.num_classes, 16, source="test")
    loop = trainer.Trainer(student, joined, 1, lr=1e-3, seed=0, desc="test", train=TrainConfig(batch_size=32),
                           teacher=teacher, kd=DistillConfig(), resumable=False)
    assert loop.cached[0].shape == (n + 18, data.num_classes)
    loop.train_until(1)
    assert loop.notes["unlabelled_seen"] == 18
    small = load_dataset(DataConfig(source="digits", image_size=16, max_samples=100, unlabelled_shards=extra))
    monkeypatch.undo()
    assert isinstance(small.unlabelled_x, shards.ShardImages)  # (still "large" under the patch above)
    small = load_dataset(DataConfig(source="digits", image_size=16, max_samples=100, unlabelled_shards=extra))
    assert isinstance(small.unlabelled_x, torch.Tensor) and unlabelled.joined(small).shard_layout is None
    assert small.fingerprint != load_dataset(DataConfig(source="digits", image_size=16, max_samples=100)).fingerprint


@pytest.mark.parametrize("data, message", [
    ('unlabelled_shards = "{root}/none-{{000..001}}.tar"', "data.unlabelled_shards (line 3): shard {root}/none-000.tar "
                                                           "does not exist"),
    ('unlabelled_shards = "{root}/x.tar"\nunlabelled_path = "{root}"', "not both"),
])
def test_bad_unlabelled_shards_are_exit_2_naming_the_key(tmp_path, data, message):
    from typer.testing import CliRunner

    from edgekiln.interfaces.cli import app

    config = tmp_path / "c.toml"
    config.write_text(f'[data]\nsource = "digits"\n{data.format(root=tmp_path)}\n[teacher]\ncandidates = ["resnet10t"]\n'
                      '[[targets]]\nname = "s"\nformat = "onnx"\n')
    result = CliRunner().invoke(app, ["validate", str(config)])
    assert result.exit_code == 2 and message.format(root=tmp_path) in " ".join(result.stderr.split()), result.stderr


def test_an_unreadable_unlabelled_shard_image_is_bad_input_naming_the_key(tmp_path):
    import webdataset as wds

    from edgekiln.errors import InputError

    with wds.TarWriter(str(tmp_path / "bad-000.tar")) as sink:
        sink.write({"__key__": "x0", "png": b"not a png"})
    with pytest.raises(InputError, match="data.unlabelled_shards: cannot read the image of sample x0"):
        load_dataset(DataConfig(source="digits", image_size=16, max_samples=100,
                                unlabelled_shards=str(tmp_path / "bad-000.tar")))


def test_the_calibration_sample_may_draw_from_the_unlabelled_shards(tmp_path):
    from edgekiln.engine.config import ConfigError, load_config
    from edgekiln.stages.quantize import QuantizeConfig
    from edgekiln.stages.quantize import work as quantize

    extra = write_unlabelled_shards(tmp_path, "frames", 30, 8)
    data = load_dataset(DataConfig(source="digits", image_size=16, max_samples=100, unlabelled_shards=extra))
    images, record = quantize.calibration_sample(data.for_stages(), QuantizeConfig(calibration_samples=12,
                                                                                   calibration_from="unlabelled"))
    assert record["count"] == 12 and record["source"] == f"unlabelled images (data.unlabelled_shards {extra})"
    torch.testing.assert_close(images, data.unlabelled_x[torch.tensor(record["indices"])])
    again, _ = quantize.calibration_sample(data, QuantizeConfig(calibration_samples=12, calibration_from="unlabelled"))
    torch.testing.assert_close(again, images)  # seeded
    config = tmp_path / "c.toml"
    config.write_text('[data]\nsource = "digits"\n[quantize]\ncalibration_from = "unlabelled"\n'
                      '[teacher]\ncandidates = ["resnet10t"]\n[[targets]]\nname = "s"\nformat = "onnx"\n')
    with pytest.raises(ConfigError, match="needs data.unlabelled_path or data.unlabelled_shards"):
        load_config(config)
