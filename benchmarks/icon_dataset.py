"""A colour image dataset built from the icon themes Debian ships: icons grouped by the
context folder their theme files them under (apps, mimetypes, places, devices, status,
actions), rendered at a fixed size onto white. Data nobody here tuned anything on.

    apt-get install breeze-icon-theme papirus-icon-theme adwaita-icon-theme librsvg2-bin
    .venv/bin/python benchmarks/icon_dataset.py --out work/icons [--size 32] [--per-class 600]

Sources, per context: Breeze (SVG, largest size folder of 64/48/32/22 per icon name),
Papirus (SVG, 64x64), Adwaita (PNG, 48x48). Aliases (symlinks) are followed and each distinct
file is used once, so no icon lands in two splits under two names. A class with more
distinct icons than --per-class is sampled (seeded). SVGs are rendered with rsvg-convert;
every icon is composited onto white (the loaders read RGB) and saved as PNG, named
<theme>-<icon name>.png under OUT/<context>/. Prints the class counts; writes OUT/SOURCES.json
(theme package versions, counts, size, seed).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import tempfile
from pathlib import Path

ICONS = Path("/usr/share/icons")
CONTEXTS = ("apps", "mimetypes", "places", "devices", "status", "actions")
BREEZE_SIZES = ("64", "48", "32", "22")


def _breeze(context: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for size in BREEZE_SIZES:
        for f in sorted((ICONS / "breeze" / context / size).glob("*.svg")):
            found.setdefault(f"breeze-{f.stem}", f)
    return found


def _papirus(context: str) -> dict[str, Path]:
    return {f"papirus-{f.stem}": f for f in sorted((ICONS / "Papirus" / "64x64" / context).glob("*.svg"))}


def _adwaita(context: str) -> dict[str, Path]:
    return {f"adwaita-{f.stem}": f for f in sorted((ICONS / "Adwaita" / "48x48" / context).glob("*.png"))}


def distinct(named: dict[str, Path]) -> dict[str, Path]:
    """One name per distinct file (aliases are symlinks to one file)."""
    seen, out = set(), {}
    for name, path in sorted(named.items()):
        real = os.path.realpath(path)
        if real not in seen and os.path.getsize(real) > 0:
            seen.add(real)
            out[name] = Path(real)
    return out


def render(source: Path, size: int, dest: Path, scratch: Path) -> bool:
    """`source` (SVG or PNG) at size x size on white, as an RGB PNG; False if it cannot be read."""
    from PIL import Image

    try:
        if source.suffix == ".svg":
            png = scratch / "icon.png"
            subprocess.run(["rsvg-convert", "-w", str(size), "-h", str(size), "-o", str(png), str(source)],
                           check=True, capture_output=True, timeout=30)
            image = Image.open(png)
        else:
            image = Image.open(source)
        image = image.convert("RGBA").resize((size, size), Image.LANCZOS)
    except (subprocess.SubprocessError, OSError):
        return False
    white = Image.new("RGBA", image.size, (255, 255, 255, 255))
    Image.alpha_composite(white, image).convert("RGB").save(dest)
    return True


def _version(package: str) -> str | None:
    done = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True)
    return done.stdout or None


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("work/icons"))
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--per-class", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        raise SystemExit(f"{args.out} is not empty: give a new folder")
    counts = {}
    with tempfile.TemporaryDirectory() as scratch:
        for context in CONTEXTS:
            pool = distinct({**_breeze(context), **_papirus(context), **_adwaita(context)})
            names = sorted(pool)
            if len(names) > args.per_class:
                names = sorted(random.Random(f"{args.seed}-{context}").sample(names, args.per_class))
            folder = args.out / context
            folder.mkdir(parents=True)
            counts[context] = sum(render(pool[n], args.size, folder / f"{n}.png", Path(scratch)) for n in names)
            print(f"{context}: {counts[context]} images (of {len(pool)} distinct icons)", flush=True)
    (args.out / "SOURCES.json").write_text(json.dumps({
        "built_by": "benchmarks/icon_dataset.py", "size": args.size, "per_class": args.per_class, "seed": args.seed,
        "counts": counts, "packages": {p: _version(p) for p in
                                       ("breeze-icon-theme", "papirus-icon-theme", "adwaita-icon-theme")}}, indent=1))
    print(f"{sum(counts.values())} images in {args.out}")
    return args.out


if __name__ == "__main__":
    main()
