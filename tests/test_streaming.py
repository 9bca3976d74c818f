"""Streamed image folders: the training split left on disk and decoded batch by batch by
worker processes gives exactly the batches, the teacher outputs and the trained weights the
in-memory split gives, with the same cache fingerprint."""

import numpy as np
import pytest
import torch
from PIL import Image

from edgekiln.data.config import DataConfig
from edgekiln.data.dataset import load_dataset
from edgekiln.data.image_files import ImageFiles, batches
from edgekiln.errors import InputError
from edgekiln.training import distillation, modeling, trainer
from edgekiln.training.config import TrainConfig


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Three classes of 30 JPEGs each, of several sizes and aspect ratios (as real folders are)."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for c, name in enumerate(("circle", "square", "stripe")):
        (root / name).mkdir()
        for i in range(30):
            w, h = int(rng.integers(36, 60)), int(rng.integers(36, 60))
            image = np.full((h, w, 3), 40 * c, dtype=np.uint8) + rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
            image[h // 4: h // 2, :, c] = 255
            Image.fromarray(image).save(root / name / f"{i:03d}.jpg", quality=90)
    return root


def both(folder, **extra):
    config = dict(source="imagefolder", path=folder, image_size=32, val_fraction=0.2, test_fraction=0.2, **extra)
    return (load_dataset(DataConfig(**config, streaming=True, num_workers=2)),
            load_dataset(DataConfig(**config, streaming=False)))


def test_a_streamed_split_reads_as_the_in_memory_one_and_keeps_its_fingerprint(folder):
    streamed, in_memory = both(folder)
    assert streamed.streamed and isinstance(streamed.train_x, ImageFiles) and not in_memory.streamed
    assert streamed.fingerprint == in_memory.fingerprint and streamed.splits == in_memory.splits
    assert streamed.train_x.shape == in_memory.train_x.shape and streamed.image_size == 32
    assert torch.equal(streamed.val_x, in_memory.val_x) and torch.equal(streamed.test_x, in_memory.test_x)
    idx = torch.tensor([5, 0, 17, 3])
    assert torch.equal(streamed.train_x[idx], in_memory.train_x[idx])
    order = torch.randperm(len(streamed.train_y), generator=torch.Generator().manual_seed(0))
    index_batches = [order[i:i + 8] for i in range(0, len(order), 8)]
    for worked, indexed in zip(batches(streamed.train_x, index_batches, workers=2),
                               batches(in_memory.train_x, index_batches), strict=True):
        assert torch.equal(worked, indexed)  # the workers keep the batches' order


def test_training_and_teacher_outputs_are_the_same_streamed_or_in_memory(folder):
    streamed, in_memory = both(folder)
    results = []
    for data in (streamed, in_memory):
        model = modeling.create("resnet10t", data.num_classes, seed=0, image_size=32)
        bundle = modeling.bundle("resnet10t", model, data.num_classes, 32, source="test")
        trainer.fit(bundle, data, 1, lr=1e-3, seed=0, desc="test", train=TrainConfig(batch_size=16),
                     resumable=False)
        teacher = distillation.Teacher([bundle])
        logits, _ = teacher.precompute(data.train_x, batch_size=16, workers=data.workers)
        results.append((bundle.model.state_dict(), logits))
    (streamed_weights, streamed_logits), (weights, logits) = results
    assert all(torch.equal(streamed_weights[k], weights[k]) for k in weights)
    assert torch.equal(streamed_logits, logits) and streamed_logits.shape == (len(streamed.train_y), 3)


def test_randaugment_in_the_decoding_workers_gives_the_in_memory_weights(folder):
    """RandAugment runs where the image is decoded (a worker process, for a streamed split),
    with draws seeded per image and epoch: the same augmented batches either way."""
    train = TrainConfig(batch_size=16, randaugment="rand-m9-mstd0.5")
    weights = []
    for data in both(folder):
        model = modeling.create("resnet10t", data.num_classes, seed=0, image_size=32)
        bundle = modeling.bundle("resnet10t", model, data.num_classes, 32, source="test")
        trainer.fit(bundle, data, 2, lr=1e-3, seed=0, desc="test", train=train, resumable=False)
        weights.append(bundle.model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[1])


def test_an_unreadable_file_stops_the_load_naming_it(folder, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    (copy / "square" / "007.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(InputError, match="cannot read image .*square/007.jpg"):
        load_dataset(DataConfig(source="imagefolder", path=copy, image_size=32, streaming=True))


def test_streaming_is_for_image_folders():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="streaming = true needs source 'imagefolder'"):
        DataConfig(streaming=True)


def test_a_folders_index_is_kept_so_its_headers_are_read_once_per_listing(folder, tmp_path, monkeypatch):
    import shutil

    import PIL.Image

    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    opened = []
    real = PIL.Image.open
    monkeypatch.setattr(PIL.Image, "open", lambda f, *a, **k: opened.append(str(f)) or real(f, *a, **k))
    config = DataConfig(source="imagefolder", path=copy, image_size=32, streaming=True, num_workers=0)
    first = load_dataset(config, index_dir=tmp_path / "index")
    held_out = len(first.val_y) + len(first.test_y)
    assert len(opened) == 90 + held_out  # every header, then val and test decoded
    opened.clear()
    again = load_dataset(config, index_dir=tmp_path / "index")
    assert len(opened) == held_out and again.fingerprint == first.fingerprint  # no header read again
    (copy / "square" / "007.jpg").write_bytes(b"not a jpeg")  # a changed file: a new listing, read again
    with pytest.raises(InputError, match="cannot read image .*square/007.jpg"):
        load_dataset(config, index_dir=tmp_path / "index")
