"""What ranks student candidates on a target's profile (targets/model_latency.for_profile):
this host times their INT8 artifacts, a profile that measures nowhere estimates them, an
unplugged phone is estimated only where the target allows it, and a profile with neither
ranks by size."""

import pytest

from edgekiln.data.config import DataConfig
from edgekiln.data.dataset import load_dataset
from edgekiln.training import model_latency
from edgekiln.targets.errors import DeviceUnreachable
from edgekiln.targets.profiles import host_profile, load_profile
from edgekiln.training import modeling


@pytest.fixture(scope="module")
def data():
    return load_dataset(DataConfig(source="digits", image_size=16, max_samples=100))


def _student(arch, data):
    model = modeling.create(arch, data.num_classes, seed=0, image_size=16)
    return modeling.bundle(arch, model, data.num_classes, 16, source="untrained"), model


def test_this_host_times_each_candidates_int8_artifact(data, tmp_path):
    make, source = model_latency.for_profile(host_profile("onnx", 1), data, tmp_path, "targets.edge", False)
    assert source == "measured on this host"
    small, small_model = _student("lcnet_035", data)
    large, large_model = _student("resnet10t", data)
    latency = make(small)
    first = latency(small_model)
    assert first > 0 and latency(small_model) == first  # one timing per architecture
    # each architecture timed on its own (which is faster at 16 px is this host's business, and
    # too close to call in a test: resnet10t's 22x MACs run in about lcnet_035's time here)
    assert make(large)(large_model) > 0
    assert not list(tmp_path.iterdir())  # the probe artifacts are gone


def test_a_profile_that_measures_nowhere_estimates_and_one_without_a_table_ranks_by_size(data, tmp_path):
    iphone = load_profile("iphone-15-pro-ane")
    make, source = model_latency.for_profile(iphone, data, tmp_path, "targets.iphone", False)
    bundle, model = _student("lcnet_035", data)
    assert source == "estimate" and make(bundle)(model) > 0
    coreml_here = host_profile("coreml", 1)  # no Core ML runtime off a Mac, and no table
    make, source = model_latency.for_profile(coreml_here, data, tmp_path, "targets.ios", False)
    assert make is None and "no [estimate] table" in source


def test_an_unplugged_phone_is_estimated_only_where_the_target_allows_it(data, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKILN_ADB", str(tmp_path / "no-adb"))
    phone = load_profile("pixel-3-cpu")
    make, source = model_latency.for_profile(phone, data, tmp_path, "targets.android", True)
    assert source.startswith("estimate (the adb device") and make is not None
    with pytest.raises(DeviceUnreachable):
        model_latency.for_profile(phone, data, tmp_path, "targets.android", False)
