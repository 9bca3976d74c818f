import numpy as np

from edgekiln.calibration import balanced_sample


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
