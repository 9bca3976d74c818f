"""QAT's fake-quantize state survives the cache: saved after training, restored into a graph
prepared afresh from the tuned model, it gives the very INT8 simulation QAT ended with, and
the TFLite artifact built from it uses those ranges."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from edgekiln.targets import get_format
from edgekiln.targets.formats.tflite import pt2e

tflite_format = get_format("tflite")
from edgekiln.targets.errors import ConversionError
from edgekiln.targets.int8 import Int8Options


def conv_bn_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A QAT-prepared net after a few training steps (observers and weights moved), its state
    saved the way the quantize stage saves it, and the weights copied back."""
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    model = conv_bn_net()
    images = torch.randn(64, 3, 12, 12)
    prepared = pt2e.prepare_qat(model, images[:1], Int8Options())
    optimizer = torch.optim.SGD(prepared.parameters(), lr=0.05)
    for i in range(0, 64, 16):
        loss = prepared(images[i : i + 16] * 3).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    own = model.state_dict()
    model.load_state_dict({k: v for k, v in prepared.state_dict().items() if k in own})
    model.eval()
    move_exported_model_to_eval(prepared)
    path = tmp_path_factory.mktemp("qat") / "qat_state.safetensors"
    save_file(pt2e.qat_state(prepared, model), path)
    # Converted with every conv-bn pattern traced afresh (none remembered from an earlier
    # test): what the conversions below, from remembered patterns, must give to the bit.
    pt2e.TRACED_PATTERNS.clear()
    expected = convert_pt2e(prepared, fold_quantize=False)
    assert len(pt2e.TRACED_PATTERNS) > 10
    return model, images.numpy(), expected, str(path)


def test_restored_state_gives_the_simulation_qat_ended_with(trained):
    model, images, expected, path = trained
    options = Int8Options(qat_state=path)
    restored = pt2e.simulate(model, images, options)
    assert np.array_equal(pt2e.predict(restored, images), pt2e.predict(expected, images))
    recalibrated = pt2e.simulate(model, images, Int8Options())  # what PTQ calibration gives instead
    assert not np.array_equal(pt2e.predict(recalibrated, images), pt2e.predict(expected, images))
    assert pt2e.calibrator_used(options).startswith("QAT")
    # a layer kept in float is not the graph QAT trained: calibrated afresh, and says so
    assert not pt2e.uses_qat_state(Int8Options(qat_state=path, float_layers=("0",)))


@pytest.mark.slow  # slow: the QAT example (test_slow.py) ships a TFLite artifact from QAT ranges
def test_the_tflite_artifact_uses_qat_ranges(trained, tmp_path):
    model, images, expected, path = trained
    options = Int8Options(qat_state=path)
    applied = tflite_format.export_int8(model, torch.from_numpy(images[:1]), images, tmp_path / "m.tflite", {},
                                        options)
    assert applied["calibrator"].startswith("QAT")
    got = tflite_format.predict(tmp_path / "m.tflite", images)
    reference = pt2e.predict(expected, images)
    assert np.abs(got - reference).max() < 0.05 * np.abs(reference).max()


def test_the_onnx_artifact_is_qats_own_graph_with_int8_weights_not_recalibrated(trained, tmp_path):
    """ONNX from QAT state: the graph QAT ended with, exported as QDQ with its weights INT8,
    runs in onnxruntime as the simulation does (quantize_static would calibrate new ranges)."""
    import onnx

    model, images, expected, path = trained
    onnx_format = get_format("onnx")
    options = Int8Options(qat_state=path, qat_scheme=pt2e.__name__, weight_type="int8")  # U8S8, as int8_types gives
    applied = onnx_format.export_int8(model, torch.from_numpy(images[:1]), images, tmp_path / "m.onnx", {}, options)
    assert applied["calibrator"].startswith("QAT") and applied["calibration_images"] == 0
    graph = onnx.load(str(tmp_path / "m.onnx"))
    kinds = {n.op_type for n in graph.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= kinds
    weights = [t for t in graph.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len(weights) >= 3  # both convolutions' and the linear layer's weights stored as INT8
    # activations as uint8 (PT2E's int8 plus 128), what onnxruntime's CPU kernels run fastest
    types = {t.name: t.data_type for t in graph.graph.initializer}
    assert {types[n.input[2]] for n in graph.graph.node if n.op_type == "QuantizeLinear"} == {onnx.TensorProto.UINT8}
    assert not any(n.metadata_props for n in graph.graph.node)  # no exporter stack traces (paths of this machine)
    got = onnx_format.predict(tmp_path / "m.onnx", images)
    reference = pt2e.predict(expected, images)
    assert (got.argmax(1) == reference.argmax(1)).mean() >= 0.9
    assert np.abs(got - reference).max() < 0.05 * np.abs(reference).max()
    # calibrated afresh, as before: what a model without QAT state (or with float layers) gets
    plain = onnx_format.export_int8(model, torch.from_numpy(images[:1]), images, tmp_path / "p.onnx", {},
                                    Int8Options(qat_state=path, qat_scheme=pt2e.__name__, weight_type="int8",
                                                float_layers=("0",)))
    assert plain["calibrator"] == "minmax" and plain["calibration_images"] == len(images)
    assert plain["qat_ranges"] == "not used: layers kept in float: calibrated afresh"
    # a device whose kernels want 7-bit weights gets quantize_static's, and the record says why
    narrow = onnx_format.export_int8(model, torch.from_numpy(images[:1]), images, tmp_path / "r.onnx", {},
                                     Int8Options(qat_state=path, qat_scheme=pt2e.__name__, weight_type="int8",
                                                 reduce_range=True))
    assert "7 bits (reduce_range)" in narrow["qat_ranges"] and "reduce_range" in narrow["weights"]


def test_state_of_another_model_is_refused(trained, tmp_path):
    _, images, _, path = trained
    other = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10))
    other(torch.from_numpy(images[:1]))
    with pytest.raises(ConversionError, match="does not fit"):
        pt2e.simulate(other.eval(), images, Int8Options(qat_state=path))


def test_a_qat_graph_converts_the_same_with_its_patterns_traced_once(trained, monkeypatch):
    """The conv-bn patterns torchao traces to convert a QAT graph are remembered per process
    (targets/formats/tflite/pt2e.py): a conversion from remembered patterns traces none of
    them again and gives, to the bit, what the fixture's conversion gave with every pattern
    traced afresh."""
    model, images, expected, path = trained
    remembered = len(pt2e.TRACED_PATTERNS)
    exported = []
    export = torch.export.export
    monkeypatch.setattr(torch.export, "export", lambda *a, **k: exported.append(a[0]) or export(*a, **k))
    restored = pt2e.simulate(model, images, Int8Options(qat_state=path))
    assert len(pt2e.TRACED_PATTERNS) == remembered
    assert len(exported) == 1 and not isinstance(exported[0], pt2e_wrapper())  # the model's own graph only
    assert np.array_equal(pt2e.predict(restored, images), pt2e.predict(expected, images))


def pt2e_wrapper():
    from torchao.quantization.pt2e.export_utils import WrapperModule

    return WrapperModule
