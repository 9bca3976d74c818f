"""Cross-layer equalization on a given model with unbalanced channel ranges, and on one without.

    .venv/bin/python benchmarks/unbalanced_ranges.py --data work/first-run/data/fashion --work work/unbalanced
    .venv/bin/python benchmarks/unbalanced_ranges.py --data ... --arch mobilenetv3_small_100 --factor 1

1. Trains `--arch` with edgekiln's trainer on the folder's train split (the run's own splits:
   seed 0, a quarter for val, a fifth for test), as "the model you already have".
2. Unbalances it: every conv -> [batch norm] -> ReLU -> conv pair that equalization.py finds
   gets its channels scaled by s and 1/s, s log-uniform in [1/F, F] (seed 0). The function is
   unchanged (its val accuracy is printed before and after); its channel ranges are F^2 apart,
   as a model that trained without weight decay, or came through a converter that folded
   scales unevenly, can be. `--factor 1` leaves the model as trained.
3. Runs `edgekiln run` from it ([model], stages given, quantize, export; ONNX for the x86
   server and TFLite for a phone) with each quantize setting, the quantize stage gated at
   `--budget` points on val: plain PTQ, equalization alone, and the whole ladder.

Prints a Markdown table: each setting's rungs (val %, seconds) and its artifacts' test
accuracy (drop against the given model, 95 % interval) and size. The run's own splits decide
everything on val; test is only reported. Compare with what a user would do instead on the
same model: `benchmarks/peers.py WORK/<setting>/out --max-drop BUDGET`.
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

[model]
arch = "{arch}"
checkpoint = "{checkpoint}"
image_size = 32
mean = {mean}
std = {std}

[pipeline]
stages = ["given", "quantize", "export"]

[quantize]
{quantize}

[budget]
max_drop_total = 100

[budget.max_drop]
quantize = {budget}

[[targets]]
name = "server"
profile = "x86-server-avx2"

[[targets]]
name = "phone"
profile = "pixel-3-cpu"
allow_estimate = true
"""

SETTINGS = {"plain": 'ladder = []\naccuracy_aware = false',
            "equalization": 'ladder = ["equalization"]\naccuracy_aware = false',
            "auto": 'ladder = "auto"'}


def given_model(args) -> tuple[Path, list[float], list[float]]:
    """Train the model on the run's train split and unbalance it (step 1 and 2); its checkpoint."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from edgekiln.data.dataset import DataConfig, load_dataset, to_input
    from edgekiln.stages.quantize import equalization
    from edgekiln.training import evaluation, modeling, trainer
    from edgekiln.training.config import TrainConfig

    data = load_dataset(DataConfig(source="imagefolder", path=args.data.resolve(), image_size=32, val_fraction=0.25,
                                   test_fraction=0.2))
    bundle = modeling.ModelBundle(args.arch, modeling.create(args.arch, data.num_classes, seed=0, image_size=32),
                                  data.num_classes, 32)
    started = time.perf_counter()
    trainer.fit(bundle, data, args.epochs, lr=3e-3, seed=0, desc=f"train {args.arch}", train=TrainConfig())
    bundle.model.eval()
    trained = evaluation.evaluate(bundle, data)
    calibration = to_input(data.train_x[:64], bundle.mean, bundle.std, 32).numpy()
    pairs = equalization.pairs_of(bundle.model, calibration)
    generator = torch.Generator().manual_seed(0)
    for pair in pairs:
        channels = bundle.model.get_submodule(pair.second).in_channels
        exponent = torch.rand(channels, generator=generator) * 2 - 1
        equalization.rescale(bundle.model, pair, torch.tensor(float(args.factor)) ** exponent)
    unbalanced = evaluation.evaluate(bundle, data)
    print(f"{args.arch}: {trained:.2f} % on val after {args.epochs} epochs ({time.perf_counter() - started:.0f} s); "
          f"{len(pairs)} pairs unbalanced by up to {args.factor}x each way: {unbalanced:.2f} % on val", flush=True)
    assert np.isclose(trained, unbalanced, atol=0.2), "unbalancing changed what the model computes"
    checkpoint = args.work / f"{args.arch}-unbalanced-{args.factor:g}.safetensors"
    args.work.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in bundle.model.state_dict().items()}, checkpoint)
    return checkpoint, list(bundle.mean), list(bundle.std)


def run(setting: str, checkpoint: Path, mean, std, args) -> dict:
    work = args.work / f"{args.arch}-{args.factor:g}-{setting}"
    work.mkdir(parents=True, exist_ok=True)
    config = work / "edgekiln.toml"
    quantize = SETTINGS[setting] + ("\nper_channel = false" if args.per_tensor else "")
    config.write_text(CONFIG.format(data=args.data.resolve(), arch=args.arch, checkpoint=checkpoint.resolve(),
                                    mean=mean, std=std, quantize=quantize, budget=args.budget))
    started = time.perf_counter()
    with open(work / "console.log", "w") as log:
        done = subprocess.run([sys.executable, "-m", "edgekiln", "run", str(config), "--out", str(work / "out"),
                               "--cache-dir", str(args.work / "cache")], stdout=log, stderr=subprocess.STDOUT)
    manifest = json.loads((work / "out" / "manifest.json").read_text())
    quantize = manifest.get("quantize") or {}
    return {"setting": setting, "exit": done.returncode, "minutes": round((time.perf_counter() - started) / 60, 1),
            "given_val": (manifest.get("model") or {}).get("accuracy"),
            "given_test": (manifest.get("model") or {}).get("test_accuracy"),
            "ladder": quantize.get("ladder"), "equalization": quantize.get("equalization"),
            "artifacts": [{k: a.get(k) for k in ("target", "format", "test_accuracy", "test_drop", "drop_ci",
                                                  "size_bytes")} for a in manifest["artifacts"]]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("work/unbalanced"))
    parser.add_argument("--arch", default="resnet10t")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--factor", type=float, default=30.0, help="channel scales log-uniform in [1/F, F]")
    parser.add_argument("--budget", type=float, default=0.5)
    parser.add_argument("--per-tensor", action="store_true", help="[quantize] per_channel = false")
    parser.add_argument("--only", nargs="+", choices=list(SETTINGS))
    args = parser.parse_args(argv)
    checkpoint, mean, std = given_model(args)
    rows = [run(s, checkpoint, mean, std, args) for s in SETTINGS if args.only is None or s in args.only]
    (args.work / f"{args.arch}-{args.factor:g}.json").write_text(json.dumps(rows, indent=1))
    print(f"given model: {rows[0]['given_val']:.2f} % val, {rows[0]['given_test']:.2f} % test")
    print("| setting | rungs: val % (seconds) | artifacts: test % (drop, 95% interval), size | exit |")
    print("|---|---|---|---|")
    for r in rows:
        steps = (r["ladder"] or {}).get("steps") or []
        rungs = "; ".join(f"{s['rung']} {s['accuracy']:.2f} ({s.get('seconds') or 0:.0f} s"
                          + (", kept" if s.get("kept") else ", not kept" if s.get("kept") is False else "") + ")"
                          for s in steps) or "-"
        arts = "; ".join(f"{a['target']}: {a['test_accuracy']:.2f} ({a['test_drop']:+.2f}, "
                         f"[{a['drop_ci'][0]:+.2f}, {a['drop_ci'][1]:+.2f}]), {a['size_bytes'] / 1e6:.2f} MB"
                         for a in r["artifacts"] if a.get("test_accuracy") is not None and a.get("drop_ci"))
        print(f"| {r['setting']} | {rungs} | {arts or '-'} | {r['exit']} |")


if __name__ == "__main__":
    main()
