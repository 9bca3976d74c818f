"""A .tflite the converter wrote but the runtime cannot prepare is a conversion failure of
that target, naming the op, not an internal error."""

import ai_edge_litert.interpreter as litert
import pytest

from edgekiln.targets import get_format
from edgekiln.targets.errors import ConversionError


class UnpreparableInterpreter:
    def __init__(self, model_path, num_threads, **kwargs):
        pass

    def allocate_tensors(self):
        raise RuntimeError("tflite/kernels/broadcast_to.cc Output shape must be broadcastable from input shape.\n"
                           "Node number 105 (BROADCAST_TO) failed to prepare.")


def test_a_model_the_runtime_cannot_prepare_is_a_conversion_error_naming_the_op(monkeypatch, tmp_path):
    monkeypatch.setattr(litert, "Interpreter", UnpreparableInterpreter)
    with pytest.raises(ConversionError, match=r"tflite conversion failed: .*does not run in ai-edge-litert.*"
                                              r"Node number 105 \(BROADCAST_TO\) failed to prepare"):
        get_format("tflite").load(tmp_path / "model.tflite")
