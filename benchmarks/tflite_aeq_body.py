"""Is an int16-layers artifact slow for its int16 ops, or for ai-edge-quantizer's INT8 body?
Writes the quantize stage's model (from a run's cache) quantized by ai-edge-quantizer with
no int16 layer, to time it beside the PT2E INT8 and the int16-layers artifacts
(benchmarks/tflite_interleaved.py).

    .venv/bin/python benchmarks/tflite_aeq_body.py CACHE/quantize/KEY work/aeq-int8.tflite
"""

from __future__ import annotations

import sys
from pathlib import Path

from edgekiln.targets.formats import tflite
from edgekiln.stages.result import load_result
from edgekiln.training.int8_recipe import calibration_images


def main(entry: Path, out: Path) -> None:
    import litert_torch

    result = load_result(entry)
    bundle = result.bundle
    calibration = calibration_images(result, bundle)  # what the export calibrates on
    fp32 = out.with_suffix(".fp32.tflite")
    litert_torch.convert(bundle.model.eval(), (bundle.example_input(),)).export(str(fp32))
    out.write_bytes(tflite._ai_edge_static(fp32, calibration, _uniform_int8()))
    print(f"written {out} ({out.stat().st_size / 1e6:.2f} MB)")


def _uniform_int8() -> list[dict]:
    from ai_edge_quantizer import recipe

    return recipe.static_wi8_ai8()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
