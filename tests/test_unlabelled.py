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
