"""Every supported student family through the whole pipeline and every target: a short
run per student on digits (800 images, 8 epochs: this checks that each stage and each
converter works, not how accurate a student can get; see kd_vs_scratch.py for that).

    .venv/bin/python benchmarks/student_matrix.py [arch ...]

Prints a Markdown table: pruning, and each artifact's accuracy in its runtime (and its
top-1 agreement with the float model it came from) next to the torch INT8 model's, with
conversion seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

STUDENTS = ["mobilenetv3_small_050", "mobilenetv3_large_075", "mobilenetv4_conv_small",
            "mobilevit_xxs", "mobilevit_xs", "mobilevit_s", "mobilevitv2_050", "resnet10t_w16"]

CONFIG = """
[data]
source = "digits"
image_size = 32
max_samples = 800
seed = 0

[teacher]
candidates = ["resnet10t"]
epochs = 4

[student]
arch = "{arch}"
epochs = 8
lr = 3e-3

[prune]
macs_ratio = 0.7
finetune_epochs = 1

[quantize]
calibration_samples = 64

[budget]
max_drop_total = 100.0

[[targets]]
name = "android"
format = "tflite"

[[targets]]
name = "server"
format = "onnx"

[[targets]]
name = "iphone"
format = "coreml"
"""


def main() -> None:
    students = sys.argv[1:] or STUDENTS
    edgekiln = Path(sys.executable).with_name("edgekiln")
    print("| student | exit | MACs distilled -> pruned | quantize (torch) % | tflite % (agreement) | onnx % (agreement) "
          "| coreml % (proxy) | conversion s (tflite / onnx / coreml) |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"  # the teacher is shared
        for arch in students:
            config = Path(tmp) / f"{arch}.toml"
            config.write_text(CONFIG.format(arch=arch))
            out = Path(tmp) / arch
            proc = subprocess.run([str(edgekiln), "run", str(config), "--out", str(out), "--cache-dir", str(cache)],
                                  capture_output=True, text=True)
            manifest_path = out / "manifest.json"
            if not manifest_path.exists():
                print(f"| {arch} | {proc.returncode} | no manifest: {proc.stdout[-300:]!r} |||||", flush=True)
                continue
            manifest = json.loads(manifest_path.read_text())
            stages = {s["name"]: s for s in manifest["stages"]}
            art = {a["format"]: a for a in manifest["artifacts"]}
            macs = (f"{stages['distill']['macs'] / 1e6:.2f}M -> {stages['prune']['macs'] / 1e6:.2f}M"
                    if "prune" in stages else "-")
            acc = [f"{art[f]['accuracy']:.2f} ({art[f]['agreement']:.1f})" if f in art else "-"
                   for f in ("tflite", "onnx")] + [f"{art['coreml']['accuracy']:.2f}" if "coreml" in art else "-"]
            secs = " / ".join(f"{art[f]['convert_seconds']:.0f}" if f in art else "-" for f in ("tflite", "onnx", "coreml"))
            quant = f"{stages['quantize']['accuracy']:.2f}" if "quantize" in stages else "-"
            error = f" ({manifest['error']})" if manifest.get("error") else ""
            print(f"| {arch} | {proc.returncode}{error} | {macs} | {quant} | {' | '.join(acc)} | {secs} |", flush=True)


if __name__ == "__main__":
    main()
