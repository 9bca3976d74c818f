"""How well a layer's own INT8 SQNR predicts its effect on the logits: for each run given,
the Spearman correlation between the per-layer SQNR order (manifest quantize.layers) and the
float-layer ranking (quantize.mixed_precision.ranking: each layer alone in INT8, the logits'
MSE), and the SQNR rank of the layers the run kept in float. A run needs float layers tried
(`ladder = false` or a ladder that reached them).

    .venv/bin/python benchmarks/sqnr_vs_ranking.py NAME=OUT_DIR [NAME=OUT_DIR ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from scipy.stats import spearmanr


def row(name: str, out_dir: Path) -> str:
    quantize = json.loads((out_dir / "manifest.json").read_text())["quantize"]
    ranking = {r["layer"]: i for i, r in enumerate(quantize["mixed_precision"]["ranking"], 1)}
    sqnr = {r["layer"]: i for i, r in enumerate(quantize["layers"], 1)}
    common = [layer for layer in ranking if layer in sqnr]
    rho = spearmanr([ranking[layer] for layer in common], [sqnr[layer] for layer in common]).statistic
    kept = ", ".join(f"{layer} ({sqnr[layer]})" for layer in quantize["mixed_precision"]["float_layers"])
    return f"| {name} | {len(common)} | {rho:+.2f} | {kept} |"


def main(argv: list[str]) -> None:
    print("| model | layers | Spearman (SQNR order, logit-effect order) | the layers kept in float, by their SQNR rank (1 = lowest) |")
    print("|---|---|---|---|")
    for arg in argv:
        name, _, out_dir = arg.partition("=")
        print(row(name, Path(out_dir)))


if __name__ == "__main__":
    main(sys.argv[1:])
