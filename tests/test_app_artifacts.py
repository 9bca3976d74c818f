"""Artifacts an app can drop in: what each format's interface (`io`) takes and gives, the
standard metadata clients read, and a real client (MediaPipe Tasks) classifying with no
code of ours in between."""

import json
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

from edgekiln.engine.config import ConfigError, load_config
from edgekiln.targets import get_format

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
LABELS = ["cat", "dog", "owl", "fox"]
SIZE = 16


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4)).eval()


@pytest.fixture(scope="module")
def pixels():
    """Camera-like frames: NHWC uint8 RGB."""
    return np.random.default_rng(0).integers(0, 256, (40, SIZE, SIZE, 3)).astype(np.uint8)


def normalized(pixels):
    """What edgekiln's own runtime measurement feeds: NCHW, (pixel / 255 - mean) / std."""
    x = (pixels / 255.0 - np.array(MEAN)) / np.array(STD)
    return x.astype(np.float32).transpose(0, 3, 1, 2)


def metadata(io):
    preprocessing = {"image_size": SIZE, "layout": "NCHW", "color": "RGB", "scale": "pixel / 255",
                     "mean": MEAN, "std": STD}
    return {"labels": json.dumps(LABELS), "preprocessing": json.dumps(preprocessing), "edgekiln_io": io,
            "name": "test classifier", "description": "a test", "edgekiln_version": "0.1.0"}


def export(fmt_name, model, pixels, path, io, encoding="int8"):
    x = normalized(pixels)
    get_format(fmt_name).export(model, torch.from_numpy(x[:1]), x, path, metadata(io), encoding)
    return path


@pytest.fixture(scope="module")
def tflites(model, pixels, tmp_path_factory):
    out = tmp_path_factory.mktemp("tflite")
    return {(io, encoding): export("tflite", model, pixels, out / f"m.{io}.{encoding}.tflite", io, encoding)
            for io, encoding in (("float", "int8"), ("uint8", "int8"), ("int8", "int8"), ("float", "fp32"),
                                 ("float", "fp16"), ("uint8", "dynamic"))}


def test_tflite_takes_nhwc_pixels_and_gives_probabilities(model, pixels, tflites):
    from ai_edge_litert.interpreter import Interpreter

    with torch.no_grad():
        reference = model(torch.from_numpy(normalized(pixels))).argmax(1).numpy()
    for (io, encoding), path in tflites.items():
        interpreter = Interpreter(model_path=str(path))
        interpreter.allocate_tensors()
        inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        if io == "int8":  # the converted body's own interface
            assert inp["dtype"] == np.int8 and list(inp["shape"]) == [1, 3, SIZE, SIZE]
            continue
        assert list(inp["shape"]) == [1, SIZE, SIZE, 3] and out["dtype"] == np.float32
        assert inp["dtype"] == (np.uint8 if io == "uint8" else np.float32)
        scores = []
        for frame in pixels:  # fed as an app feeds it
            feed = frame[None] if io == "uint8" else ((frame[None] - 127.5) / 127.5).astype(np.float32)
            interpreter.set_tensor(inp["index"], feed)
            interpreter.invoke()
            scores.append(interpreter.get_tensor(out["index"])[0])
        scores = np.array(scores)
        np.testing.assert_allclose(scores.sum(1), 1.0, atol=1e-3)  # probabilities
        assert (scores.argmax(1) == reference).mean() >= 0.9, (io, encoding)
        # edgekiln's own measurement feeds normalized NCHW images: the session converts them
        np.testing.assert_array_equal(get_format("tflite").predict(path, normalized(pixels)).argmax(1),
                                      scores.argmax(1))


def test_tflite_carries_the_standard_metadata_and_the_labels_file(tflites):
    from edgekiln.targets.formats.tflite import litert_model

    path = tflites[("float", "int8")]
    with zipfile.ZipFile(path) as z:  # the model file is also a zip of its associated files
        assert z.read(litert_model.LABELS_FILE).decode().split() == LABELS
    buffers = get_format("tflite").read_metadata(path)
    assert buffers["edgekiln_io"] == "float" and json.loads(buffers["labels"]) == LABELS
    assert "TFLITE_METADATA" not in buffers  # binary: the standard metadata, read by clients below
    assert litert_model.associated_files(tflites[("int8", "int8")]) == {}  # int8: the body, no app metadata


def test_mediapipe_image_classifier_loads_every_interface_and_agrees(model, pixels, tflites):
    mp = pytest.importorskip("mediapipe", reason="MediaPipe Tasks is in the test extra (pip install -e '.[test]')")
    from mediapipe.tasks.python import BaseOptions, vision

    for (io, encoding), path in tflites.items():
        if io == "int8":
            continue
        options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(path)), max_results=4)
        with vision.ImageClassifier.create_from_options(options) as classifier:
            results = [classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(f)))
                       for f in pixels]
        top = [r.classifications[0].categories[0] for r in results]
        ours = get_format("tflite").predict(path, normalized(pixels)).argmax(1)
        assert [c.category_name for c in top] == [LABELS[i] for i in ours], (io, encoding)


def test_onnx_uint8_embeds_the_normalization_and_fills_the_standard_fields(model, pixels, tmp_path):
    import onnx
    import onnxruntime as ort

    fmt = get_format("onnx")
    float_path = export("onnx", model, pixels, tmp_path / "float.onnx", "float", "fp32")
    for encoding in ("fp32", "int8"):
        path = export("onnx", model, pixels, tmp_path / f"uint8.{encoding}.onnx", "uint8", encoding)
        session = ort.InferenceSession(str(path))
        assert session.get_inputs()[0].type == "tensor(uint8)" and session.get_inputs()[0].shape[1:] == [SIZE, SIZE, 3]
        raw = np.concatenate([session.run(None, {session.get_inputs()[0].name: f[None]})[0] for f in pixels])
        expected = fmt.predict(float_path, normalized(pixels))
        if encoding == "fp32":
            np.testing.assert_allclose(raw, expected, atol=1e-4)
        else:
            assert (raw.argmax(1) == expected.argmax(1)).mean() >= 0.9
        np.testing.assert_array_equal(fmt.predict(path, normalized(pixels)).argmax(1), raw.argmax(1))
    proto = onnx.load(str(path))
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["labels"]) == LABELS and json.loads(props["preprocessing"])["mean"] == MEAN
    assert props["Image.BitmapPixelFormat"] == "Rgb8" and props["Image.NominalPixelRange"] == "NominalRange_0_255"
    assert proto.producer_name == "edgekiln" and proto.doc_string == "a test"


def test_core_ml_is_an_image_classifier_with_the_labels(model, pixels, tmp_path):
    import coremltools as ct

    fmt = get_format("coreml")
    path = export("coreml", model, pixels, tmp_path / "m.mlpackage", "image")
    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    assert spec.description.input[0].name == "image"
    assert spec.description.input[0].type.WhichOneof("Type") == "imageType"
    assert (spec.description.input[0].type.imageType.width, spec.description.input[0].type.imageType.height) == (SIZE, SIZE)
    assert spec.description.predictedFeatureName == "classLabel"
    assert spec.description.predictedProbabilitiesName == "classLabel_probs"
    found = fmt.check(path, (1, 3, SIZE, SIZE), "int8")
    assert found["labels"] == len(LABELS) and found["int8_weight_ops"] > 0
    # the tensor interface is still there for code that wants the raw logits
    tensor = export("coreml", model, pixels, tmp_path / "t.mlpackage", "tensor")
    assert fmt.check(tensor, (1, 3, SIZE, SIZE), "int8")["outputs"] == ["logits"]


def test_a_target_asking_an_interface_its_format_lacks_is_a_config_error(tmp_path):
    config = tmp_path / "p.toml"
    base = '[teacher]\ncandidates = ["resnet10t"]\n[[targets]]\nname = "phone"\nformat = "tflite"\n'
    config.write_text(base + 'io = "int8"\nencoding = ["fp32", "int8"]\n')
    with pytest.raises(ConfigError, match=r"targets\.phone\.io = \"int8\" \(line \d+\): io = 'int8' is the INT8 "
                                          r"body's own interface"):
        load_config(config)
    config.write_text(base.replace("tflite", "onnx") + 'io = "image"\n')
    with pytest.raises(ConfigError, match=r"targets\.phone\.io = \"image\" \(line \d+\): onnx artifacts have io "
                                          r"float, uint8, not 'image'"):
        load_config(config)
