"""Stand-in for "the model you already have": trains a timm classifier with plain timm,
torch and safetensors (no edgekiln), on the scikit-learn digits written out as an image
folder, and saves its weights as a user would. `edgekiln compress` then starts from them.

    python examples/compress/train_your_model.py --out work/compress
    python examples/compress/train_your_model.py --out out/your-model --images-only   # the folder only
    edgekiln compress --arch resnet18 --weights work/compress/resnet18.safetensors \\
        --data work/compress/digits/train --test-data work/compress/digits/test --image-size 32 \\
        --target x86-server-avx2 --target pixel-6-cpu --allow-estimate --out out/compress
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from sklearn.datasets import load_digits

IMAGENET = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # timm's defaults, as many training scripts use


def write_image_folder(root: Path) -> Path:
    """The 1,797 digits as 8x8 grey PNGs in one folder per class ("0" to "9"): every fifth
    under root/test (held out: the model never sees them), the rest under root/train."""
    digits = load_digits()
    for i, (image, label) in enumerate(zip(digits.images, digits.target)):
        folder = root / ("test" if i % 5 == 0 else "train") / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 255 / 16).astype(np.uint8)).save(folder / f"{i:04d}.png")
    return root


def load_folder(root: Path, size: int, mean=IMAGENET[0], std=IMAGENET[1]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image resized to `size` and normalized with `mean`/`std`, and its class (sorted folder order, as
    torchvision's ImageFolder numbers them)."""
    images, labels = [], []
    for label, folder in enumerate(sorted(p for p in root.iterdir() if p.is_dir())):
        for f in sorted(folder.glob("*.png")):
            rgb = Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR)
            images.append(torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255).permute(2, 0, 1))
            labels.append(label)
    x = torch.stack(images)
    x = (x - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)
    return x, torch.tensor(labels)


def train(arch: str, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = timm.create_model(arch, num_classes=int(y.max()) + 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    steps = epochs * ((len(y) + 63) // 64)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(y))
        for i in range(0, len(y), 64):
            batch = order[i:i + 64]
            loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch], label_smoothing=0.1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        print(f"epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}", flush=True)
    return model.eval()


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("work/compress"))
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--mean", type=float, nargs="+", default=list(IMAGENET[0]),
                        help="the normalization to train with (one value or three; many scripts use 0.5)")
    parser.add_argument("--std", type=float, nargs="+", default=list(IMAGENET[1]))
    parser.add_argument("--images-only", action="store_true",
                        help="write the image folder and stop (examples/digits_imagefolder.toml reads it)")
    args = parser.parse_args(argv)
    data = args.out / "digits"
    if not data.is_dir():
        write_image_folder(data)
    if args.images_only:
        print(f"wrote {data / 'train'} and {data / 'test'}")
        return data
    x, y = load_folder(data / "train", args.image_size, args.mean, args.std)
    model = train(args.arch, x, y, args.epochs)
    weights = args.out / f"{args.arch}.safetensors"
    save_file(model.state_dict(), str(weights))
    print(f"wrote {weights} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters), trained on "
          f"{data / 'train'} ({len(y)} images); {data / 'test'} is held out. Compress it:\n"
          f"  edgekiln compress --arch {args.arch} --weights {weights} --data {data / 'train'} --test-data "
          f"{data / 'test'} --image-size {args.image_size}"
          + ("" if args.mean == list(IMAGENET[0]) else f" --mean {','.join(map(str, args.mean))} --std "
             f"{','.join(map(str, args.std))}") + " --target x86-server-avx2 --target pixel-6-cpu "
          f"--allow-estimate --prune 0.6 --out out/compress")
    return weights


if __name__ == "__main__":
    main()
