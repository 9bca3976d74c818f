"""MNIST-style IDX files as a data source (`source = "idx"`): train and val from the train
files, the t10k files as the test split, gzipped or not; bad files named."""

import gzip
import struct

import numpy as np
import pytest

from edgekiln.data.dataset import DataConfig, load_dataset
from edgekiln.engine.config import ConfigError, check_files, config_from_text
from edgekiln.errors import InputError


def _idx(array: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape) \
        + array.astype(np.uint8).tobytes()


def write_dataset(folder, train=200, test=50, gz=True, classes=4):
    """An IDX dataset: class c's images are bright in column band c (learnable, distinct)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, count in (("train", train), ("t10k", test)):
        if not count:
            continue
        labels = np.arange(count) % classes
        images = rng.integers(0, 60, size=(count, 28, 28)).astype(np.uint8)
        for i, c in enumerate(labels):
            images[i, :, c * 7: c * 7 + 7] = 250
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            data = _idx(array)
            name = f"{prefix}-{kind}-ubyte" + (".gz" if gz else "")
            (folder / name).write_bytes(gzip.compress(data) if gz else data)
    return folder


@pytest.mark.parametrize("gz", [True, False])
def test_the_train_files_give_train_and_val_and_the_t10k_files_are_the_test_split(tmp_path, gz):
    folder = write_dataset(tmp_path / "idx", gz=gz)
    data = load_dataset(DataConfig(source="idx", path=folder, image_size=32, val_fraction=0.2,
                                   classes=["a", "b", "c", "d"]))
    assert data.train_x.shape == (160, 3, 32, 32) and data.val_x.shape == (40, 3, 32, 32)
    assert data.test_x.shape == (50, 3, 32, 32) and data.classes == ["a", "b", "c", "d"]
    assert data.splits["test"]["members"][:2] == ["t10k:0", "t10k:1"]
    assert all(m.startswith("train:") for m in data.splits["val"]["members"])
    # the images are the files', resized: class 0's band is on the left
    left, right = data.test_x[0, 0, :, :6].float().mean(), data.test_x[0, 0, :, -6:].float().mean()
    assert left > 200 > 60 > right


def test_without_t10k_files_the_test_split_is_carved_and_max_samples_subsets_train(tmp_path):
    folder = write_dataset(tmp_path / "idx", test=0)
    data = load_dataset(DataConfig(source="idx", path=folder, image_size=28, max_samples=100))
    assert len(data.train_y) + len(data.val_y) + len(data.test_y) == 100 and data.classes == ["0", "1", "2", "3"]


def test_bad_idx_files_are_named(tmp_path):
    folder = write_dataset(tmp_path / "idx", gz=False)
    images = folder / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-5])
    with pytest.raises(InputError, match="train-images-idx3-ubyte is truncated or too long"):
        load_dataset(DataConfig(source="idx", path=folder))
    images.write_bytes(b"PK\x03\x04 not an idx file")
    with pytest.raises(InputError, match="is not an IDX file"):
        load_dataset(DataConfig(source="idx", path=folder))
    (folder / "t10k-labels-idx1-ubyte").unlink()
    write_dataset(folder, gz=False)
    (folder / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(InputError, match="has the test images but not the labels"):
        load_dataset(DataConfig(source="idx", path=folder))
    with pytest.raises(InputError, match="names 2 classes"):
        load_dataset(DataConfig(source="idx", path=write_dataset(tmp_path / "ok"), classes=["a", "b"]))


def test_validate_names_a_folder_without_train_files(tmp_path):
    (tmp_path / "empty").mkdir()
    text = (f'[data]\nsource = "idx"\npath = "{tmp_path / "empty"}"\n[teacher]\ncandidates = ["resnet10t"]\n'
            '[[targets]]\nname = "s"\nformat = "onnx"\n')
    with pytest.raises(ConfigError, match=r"data.path \(line \d+\): .* has no train-images-idx3-ubyte\[.gz\] and no "
                                          r"train-labels-idx1-ubyte\[.gz\]"):
        check_files(config_from_text(text))
    with pytest.raises(ConfigError, match="source 'idx' takes no `val_path`"):
        config_from_text(text.replace('[teacher]', f'val_path = "{tmp_path}"\n[teacher]'))
