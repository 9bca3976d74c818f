"""The INT8 repair ladder on a model whose plain INT8 breaks its budget: a MobileNetV3
(hard-swish, squeeze-excite: the commonest PTQ complaint) trained here on an image folder,
then quantized with each ladder setting from the same cached model. One row per setting:
each rung's val accuracy and seconds, the artifacts' test accuracy and drop, size and host
p50, and the per-layer SQNR's lowest layers.

    .venv/bin/python benchmarks/int8_ladder.py --data work/first-run/data/fashion --work work/ladder

`--data`: a folder of class sub-folders (benchmarks/first_run.py writes Fashion-MNIST's and
the icons' under WORK/data). The budget on the quantize stage (`--budget`, points against
the float model) is what the ladder must meet, decided on val.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

CONFIG = """
[data]
source = "imagefolder"
path = "{data}"
image_size = 32
val_fraction = 0.25
test_fraction = 0.2

[pipeline]
stages = ["teacher", "quantize", "export"]

[teacher]
candidates = ["{arch}"]
epochs = "auto"
max_epochs = 30

[quantize]
{ladder}

[budget]
max_drop_total = 100

[budget.max_drop]
quantize = {budget}

[[targets]]
name = "phone"
profile = "pixel-3-cpu"
allow_estimate = true

[[targets]]
name = "server"
profile = "x86-server-avx2"
"""

SETTINGS = {"plain (no repair)": "ladder = []\naccuracy_aware = false",
            "float-layers (before the ladder)": "ladder = false",
            "int16-layers (float-layers' layers given int16 activations, not float)":
                'ladder = false\nsensitive_layers = "int16"',
            "bias-correction (that rung alone)": 'ladder = ["bias_correction"]\naccuracy_aware = false',
            "qat-rung (that rung alone, its default 3 epochs)": 'ladder = ["qat"]\naccuracy_aware = false',
            "ladder-auto": 'ladder = "auto"'}


def run(setting: str, ladder: str, args) -> dict:
    work = args.work / setting.split(" ")[0]
    work.mkdir(parents=True, exist_ok=True)
    config = work / "ladder.toml"
    config.write_text(CONFIG.format(data=args.data.resolve(), arch=args.arch, ladder=ladder, budget=args.budget))
    started = time.perf_counter()
    with open(work / "console.log", "w") as log:
        done = subprocess.run([sys.executable, "-m", "edgekiln", "run", str(config), "--out", str(work / "out"),
                               "--cache-dir", str(args.work / "cache")], stdout=log, stderr=subprocess.STDOUT)
    manifest = json.loads((work / "out" / "manifest.json").read_text())
    quantize = manifest.get("quantize") or {}
    teacher = next((s for s in manifest["stages"] if s["name"] == "teacher"), {})
    return {"setting": setting, "exit": done.returncode, "minutes": round((time.perf_counter() - started) / 60, 1),
            "float_val": teacher.get("accuracy"), "float_test": teacher.get("test_accuracy"),
            "ladder": quantize.get("ladder"), "layers": (quantize.get("layers") or [])[:3],
            "artifacts": [{k: a.get(k) for k in ("target", "format", "test_accuracy", "test_drop", "drop_ci",
                                                  "size_bytes", "latency_ms", "latency_source", "quantization")}
                          for a in manifest["artifacts"]]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("work/ladder"))
    parser.add_argument("--arch", default="mobilenetv3_small_100")
    parser.add_argument("--budget", type=float, default=0.5)
    parser.add_argument("--only", nargs="+", choices=[s.split(" ")[0] for s in SETTINGS],
                        help="run these settings only (default: all)")
    args = parser.parse_args(argv)
    rows = [run(setting, ladder, args) for setting, ladder in SETTINGS.items()
            if args.only is None or setting.split(" ")[0] in args.only]
    (args.work / "ladder.json").write_text(json.dumps(rows, indent=1))
    print("| setting | rungs: val % (seconds) | artifacts: test % (drop, 95% interval), size | lowest SQNR | exit |")
    print("|---|---|---|---|---|")
    for r in rows:
        steps = (r["ladder"] or {}).get("steps") or []
        rungs = "; ".join(f"{s['rung']}{' ' + s['calibrator'] if s.get('calibrator') else ''} "
                          f"{s['accuracy']:.2f} ({s.get('seconds') or 0:.0f} s)" for s in steps) or "-"
        arts = "; ".join(f"{a['target']}: {a['test_accuracy']:.2f} ({a['test_drop']:+.2f}, "
                         f"[{a['drop_ci'][0]:+.2f}, {a['drop_ci'][1]:+.2f}]), {a['size_bytes'] / 1e6:.2f} MB"
                         for a in r["artifacts"] if a.get("test_accuracy") is not None and a.get("drop_ci"))
        low = ", ".join(f"{x['layer']} {x['sqnr_db']:.1f} dB" for x in r["layers"])
        print(f"| {r['setting']} | {rungs} | {arts or '-'} | {low or '-'} | {r['exit']} |")


if __name__ == "__main__":
    main()
