"""A first run on your own images, as a new user makes it: `edgekiln init` on a folder, then
`edgekiln run` on the config it wrote, unedited, from an empty cache. One row per dataset:
wall time, the teacher's and the artifacts' test accuracy, the drop with its 95 % interval,
and whether the run passed its budget.

    .venv/bin/python benchmarks/first_run.py --work work/first-run [--dataset fashion --dataset icons --dataset digits]

Datasets (folders of class sub-folders, written under WORK/data on first use):
- fashion: Fashion-MNIST (Debian's dataset-fashion-mnist), 400 training images a class, as
  28 px grey PNGs (4,000 images);
- icons: benchmarks/icon_dataset.py's colour icons (six contexts, 3,000 images at 32 px);
- digits: scikit-learn's 1,797 digits as 8 px PNGs (examples/compress/train_your_model.py
  --images-only).
The recipe init writes was chosen on the digits and on Fashion-MNIST (BENCHMARKS.md); the
icons are data it was not chosen on. Each run's console log and output folder stay under WORK.
`--tiny`: 40 images a class of Fashion-MNIST, every cap cut to 2 epochs (the slow test).
`--max-minutes M`: run with `edgekiln run --max-minutes M` (the time budget), in a folder of
its own (NAME-mM) from an empty cache.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot"]


def fashion_folder(out: Path, per_class: int) -> Path:
    """The first `per_class` training images of each Fashion-MNIST class, as PNGs."""
    import numpy as np
    from PIL import Image

    def read(name: str) -> np.ndarray:
        data = gzip.open(FASHION / f"{name}.gz").read()
        rank = data[3]
        shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(rank)]
        return np.frombuffer(data, np.uint8, offset=4 + 4 * rank).reshape(shape)

    images, labels = read("train-images-idx3-ubyte"), read("train-labels-idx1-ubyte")
    for label, name in enumerate(CLASSES):
        folder = out / name
        folder.mkdir(parents=True)
        for i in np.flatnonzero(labels == label)[:per_class]:
            Image.fromarray(images[i]).save(folder / f"{i:05d}.png")
    return out


def dataset(name: str, work: Path, tiny: bool) -> Path:
    folder = work / "data" / (name + ("-tiny" if tiny else ""))
    if folder.is_dir():
        return folder
    if name == "fashion":
        return fashion_folder(folder, 40 if tiny else 400)
    if name == "icons":
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "icon_dataset.py"), "--out", str(folder)], check=True)
        return folder
    if name == "digits":
        subprocess.run([sys.executable, str(ROOT / "examples" / "compress" / "train_your_model.py"), "--out",
                        str(folder.parent / "digits-src"), "--images-only"], check=True)
        (folder.parent / "digits-src" / "digits" / "train").rename(folder)
        return folder
    raise SystemExit(f"unknown dataset {name!r}")


def _cli() -> list[str]:
    return [sys.executable, "-m", "edgekiln"]


def first_run(name: str, work: Path, tiny: bool, max_minutes: float | None = None) -> dict:
    data = dataset(name, work, tiny)
    run_dir = work / (name + ("-tiny" if tiny else "") + ("" if max_minutes is None else f"-m{max_minutes:g}"))
    run_dir.mkdir(parents=True, exist_ok=True)
    config = run_dir / "edgekiln.toml"
    subprocess.run([*_cli(), "init", str(data), "--out", str(config), "--force"], check=True, capture_output=True)
    if tiny:  # every cap to 2 epochs: the harness is under test, not the recipe
        config.write_text(re.sub(r"max_epochs = \d+", "max_epochs = 2", config.read_text()))
    started = time.perf_counter()
    with open(run_dir / "console.log", "w") as log:
        done = subprocess.run([*_cli(), "run", str(config), "--out", str(run_dir / "out"), "--cache-dir",
                               str(run_dir / "cache"),
                               *([] if max_minutes is None else ["--max-minutes", str(max_minutes)])], stdout=log, stderr=subprocess.STDOUT,
                              env={**__import__("os").environ, "COLUMNS": "160"})
    minutes = (time.perf_counter() - started) / 60
    manifest = json.loads((run_dir / "out" / "manifest.json").read_text())
    teacher = manifest.get("teacher") or {}
    drops = [(a["target"], a.get("test_accuracy"), a.get("test_drop"), a.get("drop_ci")) for a in manifest["artifacts"]]
    student = manifest.get("student") or {}
    return {"dataset": name, "images": sum(1 for _ in data.rglob("*.png")), "exit": done.returncode,
            "minutes": round(minutes, 1), "passed": manifest.get("passed"),
            "teacher_test": teacher.get("test_accuracy"), "student": student.get("name"),
            "missed_budget": student.get("missed_budget"), "artifacts": drops,
            "search_epochs": student.get("epochs_spent"), "max_minutes": max_minutes,
            "time_budget_cut": (manifest.get("time_budget") or {}).get("cut"),
            "stages": {s["name"]: round(s.get("seconds") or 0, 1) for s in manifest["stages"]}}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("work/first-run"))
    parser.add_argument("--dataset", action="append", choices=["fashion", "icons", "digits"])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--max-minutes", type=float)
    args = parser.parse_args(argv)
    rows = [first_run(name, args.work, args.tiny, args.max_minutes) for name in args.dataset or ["fashion"]]
    print("| dataset | max_minutes | images | minutes | teacher test % | student | artifacts test % (drop, 95% interval) | "
          "search epochs | cut by the time budget | exit |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        arts = "; ".join(f"{t}: {acc:.2f} ({drop:+.2f}, [{ci[0]:+.2f}, {ci[1]:+.2f}])" if acc is not None and ci
                         else f"{t}: -" for t, acc, drop, ci in r["artifacts"])
        teacher = "-" if r["teacher_test"] is None else f"{r['teacher_test']:.2f}"
        cut = "; ".join(f"{k}: {', '.join(v)}" for k, v in (r["time_budget_cut"] or {}).items()) or "-"
        budget = "-" if r["max_minutes"] is None else f"{r['max_minutes']:g}"
        print(f"| {r['dataset']} | {budget} | {r['images']} | {r['minutes']} | {teacher} | {r['student']} | {arts} | "
              f"{r['search_epochs']} | {cut} | {r['exit']} |")
    suffix = "" if args.max_minutes is None else f"-m{args.max_minutes:g}"
    (args.work / f"first_run{suffix}.json").write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
