import numpy as np
import pytest
import torch
from PIL import Image

from edgekiln.stages.data import DataConfig, load_dataset
from edgekiln.stages.errors import InputError


def test_digits_split_is_deterministic_stratified_and_disjoint():
    a = load_dataset(DataConfig(image_size=16, seed=1))
    b = load_dataset(DataConfig(image_size=16, seed=1))
    c = load_dataset(DataConfig(image_size=16, seed=2))
    assert torch.equal(a.val_x, b.val_x) and a.fingerprint == b.fingerprint
    assert a.fingerprint != c.fingerprint and not torch.equal(a.val_y, c.val_y)
    assert a.train_x.shape[1:] == (3, 16, 16) and a.train_x.dtype == torch.uint8
    assert len(a.train_y) + len(a.val_y) == 1797
    assert np.bincount(a.val_y.numpy()).min() >= 30  # every class in val, ~20% each
    assert a.classes == [str(i) for i in range(10)]


def make_folder(root, classes=("cat", "dog"), per_class=6, size=(40, 30)):
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def test_image_folder_loads_classes_and_crops_square(tmp_path):
    root = make_folder(tmp_path / "imgs")
    data = load_dataset(DataConfig(source="imagefolder", path=root, image_size=24, val_fraction=0.5))
    assert data.classes == ["cat", "dog"]
    assert data.train_x.shape[1:] == (3, 24, 24)
    assert len(data.train_y) == len(data.val_y) == 6


def test_image_folder_with_separate_val_path(tmp_path):
    data = load_dataset(DataConfig(source="imagefolder", path=make_folder(tmp_path / "t"),
                                   val_path=make_folder(tmp_path / "v", per_class=2), image_size=16))
    assert len(data.train_y) == 12 and len(data.val_y) == 4


def test_image_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(InputError, match="data.path: .* is not a directory"):
        load_dataset(DataConfig(source="imagefolder", path=tmp_path / "none"))
    root = make_folder(tmp_path / "imgs")
    (root / "dog" / "3.png").write_bytes(b"broken")
    with pytest.raises(InputError, match="cannot read image .*3.png"):
        load_dataset(DataConfig(source="imagefolder", path=root))
    val = make_folder(tmp_path / "val", classes=("cat", "cow"))
    (root / "dog" / "3.png").unlink()
    with pytest.raises(InputError, match="data.val_path classes"):
        load_dataset(DataConfig(source="imagefolder", path=root, val_path=val))
