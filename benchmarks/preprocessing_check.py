"""What the given model's preprocessing check costs and finds, on data it was not designed on.

    .venv/bin/python benchmarks/preprocessing_check.py [--tiny]

Fashion-MNIST (Debian's dataset-fashion-mnist, /usr/share/datasets/fashion-mnist) at 32 px,
a val split of 1,000 images. A resnet10t is trained with plain torch (3,000 images, 3
epochs) at 32 px with mean/std 0.5, as many training scripts do; then the check
(stages/given/precheck.py, the same function a run calls) is timed under three configured
preprocessings: the right one, timm's (176 px, ImageNet mean/std: what compress assumed
before), and 32 px with ImageNet mean/std. Prints a Markdown table: configured, verdict, best
found, accuracy of each on the val sample, seconds. The check was designed on the digits
(tests/test_preprocessing_check.py); this is its first run on other data.

`--tiny`: 400 training images, 1 epoch, a 300-image val (the slow test runs it)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

FASHION = Path("/usr/share/datasets/fashion-mnist")
HALF = ((0.5,) * 3, (0.5,) * 3)
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args(argv)
    from edgekiln.data.config import DataConfig
    from edgekiln.data.dataset import load_dataset, to_input
    from edgekiln.errors import InputError
    from edgekiln.stages.given import precheck
    from edgekiln.training import modeling

    train_n, epochs, val_n = (400, 1, 300) if args.tiny else (3000, 3, 1000)
    total = train_n + val_n
    data = load_dataset(DataConfig(source="idx", path=FASHION, image_size=32, max_samples=total,
                                   val_fraction=val_n / total, test_fraction=0.0))
    torch.manual_seed(0)
    model = modeling.create("resnet10t", data.num_classes, image_size=32)
    x = to_input(data.train_x, *HALF)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        for i in torch.randperm(len(x)).split(64):
            loss = torch.nn.functional.cross_entropy(model(x[i]), data.train_y[i])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    images, labels = data.val_x[:precheck.SAMPLE], data.val_y[:precheck.SAMPLE]
    print(f"Fashion-MNIST, val {len(data.val_y)} images (the check scores a sample of {len(labels)}, screens on "
          f"{min(precheck.SCREEN, len(labels))}); resnet10t trained at 32 px with mean/std 0.5\n")
    print("| configured | verdict | best found | configured acc % | best acc % | tried | seconds |")
    print("|---|---|---|---|---|---|---|")
    for size, (mean, std) in ((32, HALF), (176, IMAGENET), (32, IMAGENET)):
        bundle = modeling.ModelBundle("resnet10t", model, data.num_classes, size, mean, std)
        started = time.perf_counter()
        configured, best, screened = precheck.search(bundle, images, labels, native=28)
        hits_cfg = precheck._hits(bundle, configured, images, labels)
        hits_best = hits_cfg if best == configured else precheck._hits(bundle, best, images, labels)
        try:
            record = precheck.verdict(configured, best, hits_cfg, hits_best, data.num_classes, screened)
            verdict = record["verdict"]
        except InputError as e:
            verdict = "refused (exit 2)" if "chance" not in str(e) else "refused: at chance (exit 2)"
        seconds = time.perf_counter() - started
        print(f"| {configured.describe()} | {verdict} | {best.describe()} | {hits_cfg.mean() * 100:.1f} | "
              f"{hits_best.mean() * 100:.1f} | {len(screened)} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
