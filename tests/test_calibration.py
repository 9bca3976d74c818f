import numpy as np
import pytest
import torch

from edgekiln.calibration import balanced_sample
from edgekiln.stages.quantize import QuantizeSections


def test_sample_is_class_balanced_and_seeded():
    labels = np.repeat(np.arange(5), [100, 50, 30, 20, 10])
    picked = balanced_sample(labels, 25, seed=3)
    assert len(picked) == len(set(picked)) == 25
    assert np.bincount(labels[picked]).tolist() == [5, 5, 5, 5, 5]
    assert np.array_equal(picked, balanced_sample(labels, 25, seed=3))
    assert not np.array_equal(picked, balanced_sample(labels, 25, seed=4))


def test_small_classes_give_all_they_have():
    labels = np.array([0] * 40 + [1] * 2)
    counts = np.bincount(labels[balanced_sample(labels, 10, seed=0)])
    assert counts.tolist() == [8, 2]


def test_count_beyond_data_takes_everything():
    assert balanced_sample(np.array([0, 1, 1]), 10, seed=0).tolist() == [0, 1, 2]


def write_images(folder, count, size=20):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        sub = folder / ("a" if i % 2 else "b")
        sub.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (size, size + 6, 3), dtype=np.uint8)).save(sub / f"{i}.png")


def test_folder_sample_is_seeded_resized_and_recursive(tmp_path):
    from edgekiln.calibration import folder_sample

    write_images(tmp_path / "unlabelled", 12)
    images, files = folder_sample(tmp_path / "unlabelled", 5, seed=1, size=16)
    assert images.shape == (5, 3, 16, 16) and images.dtype == torch.uint8
    assert len(set(files)) == 5 and {f.split("/")[0] for f in files} <= {"a", "b"}
    assert folder_sample(tmp_path / "unlabelled", 5, seed=1, size=16)[1] == files
    assert folder_sample(tmp_path / "unlabelled", 5, seed=2, size=16)[1] != files
    assert len(folder_sample(tmp_path / "unlabelled", 50, seed=1, size=16)[1]) == 12


@pytest.mark.parametrize("problem", ["missing", "empty", "unreadable"])
def test_a_bad_calibration_folder_names_the_key_and_the_file(tmp_path, problem):
    from edgekiln.data.dataset import DataConfig, load_dataset
    from edgekiln.errors import InputError
    from edgekiln.stages.quantize import work as quantize

    folder = tmp_path / "calib"
    if problem != "missing":
        folder.mkdir()
    if problem == "unreadable":
        (folder / "broken.jpg").write_bytes(b"not a jpeg")
    cfg = quantize.QuantizeConfig(calibration_path=folder)
    if problem == "unreadable":  # found only when read, in the stage
        with pytest.raises(InputError, match="quantize.calibration_path: cannot read image .*broken.jpg"):
            quantize.calibration_sample(load_dataset(DataConfig(image_size=16)), cfg)
    else:  # found before any training
        with pytest.raises(InputError, match=f"quantize.calibration_path: {folder}"):
            quantize.preflight(QuantizeSections(quantize=cfg))


def test_a_calibration_folder_enters_the_cache_key_through_its_listing(tmp_path):
    from edgekiln.engine.runner import _fingerprint

    write_images(tmp_path / "calib", 3)
    before = _fingerprint({"calibration_path": tmp_path / "calib"})
    assert before == _fingerprint({"calibration_path": tmp_path / "calib"})
    write_images(tmp_path / "calib" / "more", 1)
    assert _fingerprint({"calibration_path": tmp_path / "calib"}) != before
