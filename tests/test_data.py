import numpy as np
import pytest
import torch
from PIL import Image

from edgekiln.data.dataset import DataConfig, load_dataset
from edgekiln.errors import InputError


def test_digits_split_is_deterministic_stratified_and_disjoint():
    a = load_dataset(DataConfig(image_size=16, seed=1))
    b = load_dataset(DataConfig(image_size=16, seed=1))
    c = load_dataset(DataConfig(image_size=16, seed=2))
    assert torch.equal(a.val_x, b.val_x) and a.fingerprint == b.fingerprint
    assert a.fingerprint != c.fingerprint and not torch.equal(a.val_y, c.val_y)
    assert a.train_x.shape[1:] == (3, 16, 16) and a.train_x.dtype == torch.uint8
    assert len(a.train_y) + len(a.val_y) + len(a.test_y) == 1797
    assert len(a.val_y) == len(a.test_y) == 360  # 20% of all the images each
    assert np.bincount(a.val_y.numpy()).min() >= 30  # every class in val, ~20% each
    assert np.bincount(a.test_y.numpy()).min() >= 30
    assert a.classes == [str(i) for i in range(10)]
    assert torch.equal(a.test_x, b.test_x) and a.splits == b.splits


def test_val_and_test_are_disjoint_and_listed_by_sample_index():
    from sklearn.datasets import load_digits

    data = load_dataset(DataConfig(image_size=16, seed=3))
    val, test = data.splits["val"]["members"], data.splits["test"]["members"]
    assert not set(val) & set(test)
    assert data.splits["train_count"] + len(val) + len(test) == 1797
    # the listed indices are the images: anyone can rebuild the test split from splits.json
    assert np.array_equal(np.asarray(load_digits().target)[test], data.test_y.numpy())
    # every image is in exactly one split (train is what is left)
    assert len(set(val) | set(test)) == len(val) + len(test)


def test_stages_see_no_test_images():
    data = load_dataset(DataConfig(image_size=16))
    view = data.for_stages()
    assert data.has_test and not view.has_test and view.test_x is None
    assert torch.equal(view.val_x, data.val_x)


def test_no_test_split_when_asked_and_the_split_is_stable():
    without = load_dataset(DataConfig(image_size=16, test_fraction=0.0))
    assert not without.has_test and without.splits["test"] is None
    assert len(without.train_y) + len(without.val_y) == 1797


def test_fractions_that_leave_nothing_to_train_on_are_refused():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="leaves under 10%"):
        DataConfig(val_fraction=0.5, test_fraction=0.45)


def make_folder(root, classes=("cat", "dog"), per_class=6, size=(40, 30)):
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def test_image_folder_loads_classes_and_crops_square(tmp_path):
    root = make_folder(tmp_path / "imgs")
    data = load_dataset(DataConfig(source="imagefolder", path=root, image_size=24, val_fraction=0.5,
                                   test_fraction=0.0))
    assert data.classes == ["cat", "dog"]
    assert data.train_x.shape[1:] == (3, 24, 24)
    assert len(data.train_y) == len(data.val_y) == 6


def test_image_folder_test_split_lists_relative_paths(tmp_path):
    root = make_folder(tmp_path / "imgs", per_class=10)
    data = load_dataset(DataConfig(source="imagefolder", path=root, image_size=16, val_fraction=0.2,
                                   test_fraction=0.2))
    test = data.splits["test"]
    assert test["root"] == "data.path" and test["count"] == 4 == len(data.test_y)
    assert all((root / member).is_file() for member in test["members"])
    assert not set(test["members"]) & set(data.splits["val"]["members"])


def test_image_folder_with_a_separate_test_path(tmp_path):
    data = load_dataset(DataConfig(source="imagefolder", path=make_folder(tmp_path / "t"),
                                   test_path=make_folder(tmp_path / "x", per_class=3), image_size=16))
    assert len(data.test_y) == 6 and data.splits["test"]["root"] == "data.test_path"
    assert len(data.train_y) + len(data.val_y) == 12


def test_image_folder_with_separate_val_path(tmp_path):
    data = load_dataset(DataConfig(source="imagefolder", path=make_folder(tmp_path / "t"),
                                   val_path=make_folder(tmp_path / "v", per_class=2), image_size=16,
                                   test_fraction=0.0))
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


def _png_header(path, width, height):
    """A PNG whose header says width x height, with no pixel data: opening reads only the
    header, so a 30000 x 30000 image costs 50 bytes on disk here."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side", [30000, 13000])
def test_an_oversized_image_is_refused_from_its_header_naming_file_and_size(tmp_path, side):
    root = make_folder(tmp_path / "imgs")
    _png_header(root / "dog" / "huge.png", side, side)
    with pytest.raises(InputError, match=f"huge.png is {side}x{side} .* over data.max_image_pixels = 89,478,485"):
        load_dataset(DataConfig(source="imagefolder", path=root))


def test_the_image_size_limit_is_the_configs(tmp_path):
    from edgekiln.data.dataset import check_image_header

    image = _png_header(tmp_path / "wide.png", 4000, 3000)
    check_image_header(image, None, "data.path")
    check_image_header(image, 12_000_000, "data.path")
    with pytest.raises(InputError, match=r"4000x3000 \(12,000,000 pixels\), over data.max_image_pixels = 11,999,999"):
        check_image_header(image, 11_999_999, "data.path")


def test_a_large_jpeg_decodes_at_a_reduced_size(tmp_path):
    """Memory follows the model's input, not the file: a 6000 x 6000 JPEG (108 MB decoded)
    read at 32 px raises the peak memory of a fresh process by a small fraction of that."""
    import subprocess
    import sys

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (6000, 6000, 3), dtype=np.uint8)).save(
        tmp_path / "big.jpg", quality=80)
    probe = ("import resource; from edgekiln.calibration.images import read_square;"
             "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss;"
             f"image = read_square({str(tmp_path / 'big.jpg')!r}, 32);"
             "print(image.shape, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)")
    shape, grown_mb = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                     check=True).stdout.rsplit(" ", 1)
    assert shape == "(32, 32, 3)" and int(grown_mb) < 20, grown_mb


def test_hidden_files_and_folders_are_skipped_and_listed(tmp_path):
    root = make_folder(tmp_path / "imgs")
    for hidden in ("...", "..a", ".thumbnails"):
        make_folder(root / hidden, classes=("x",), per_class=1)
    (root / "cat" / ".DS_Store").write_bytes(b"\0")
    (root / "cat" / "._0.png").write_bytes(b"AppleDouble")  # not an image: read, it would stop the run
    data = load_dataset(DataConfig(source="imagefolder", path=root, image_size=16, test_fraction=0.0))
    assert data.classes == ["cat", "dog"] and len(data.train_y) + len(data.val_y) == 12
    assert sorted(data.skipped) == ["data.path: .../", "data.path: ..a/", "data.path: .thumbnails/",
                                    "data.path: cat/.DS_Store", "data.path: cat/._0.png"]


def test_links_leaving_the_data_folder_are_refused_unless_followed(tmp_path):
    root = make_folder(tmp_path / "imgs")
    elsewhere = make_folder(tmp_path / "elsewhere", classes=("bird",))
    (root / "bird").symlink_to(elsewhere / "bird")
    with pytest.raises(InputError, match=r"data.path: .*bird links to .*elsewhere/bird, outside .*data.follow_symlinks"):
        load_dataset(DataConfig(source="imagefolder", path=root, image_size=16))
    data = load_dataset(DataConfig(source="imagefolder", path=root, image_size=16, follow_symlinks=True))
    assert data.classes == ["bird", "cat", "dog"]
    (root / "bird").unlink()
    (root / "cat" / "linked.png").symlink_to(elsewhere / "bird" / "0.png")
    with pytest.raises(InputError, match="linked.png links to"):
        load_dataset(DataConfig(source="imagefolder", path=root, image_size=16))
    (root / "cat" / "inside.png").symlink_to(root / "dog" / "0.png")  # a link inside the folder is fine
    (root / "cat" / "linked.png").unlink()
    assert len(load_dataset(DataConfig(source="imagefolder", path=root, image_size=16)).classes) == 2
