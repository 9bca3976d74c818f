"""Classify a run's held-out test images with MediaPipe Tasks, as an app would: the TFLite
artifact loaded as is (labels and normalization from its metadata), camera-like frames in
(HxWx3 uint8 RGB). Compares MediaPipe's accuracy with the manifest's.

    .venv/bin/pip install mediapipe==1.2.3      # in the test extra: pip install -e '.[test]'
    .venv/bin/python examples/mediapipe_classify.py out/digits

Only for runs on the bundled digits (the test members are `load_digits()` indices in
splits.json); for an image folder, feed the files splits.json lists the same way.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import mediapipe as mp
import numpy as np
from mediapipe.tasks.python import BaseOptions, vision
from sklearn.datasets import load_digits


def frames(out: Path, size: int) -> tuple[list[np.ndarray], np.ndarray]:
    """The test split's images as RGB frames of `size` px, and their labels."""
    import torch

    digits = load_digits()
    test = json.loads((out / "splits.json").read_text())["test"]["members"]
    # 8x8 grey levels 0..16 -> RGB pictures of `size` px, as edgekiln's digits loader makes them
    x = torch.tensor(digits.images[test], dtype=torch.float32)[:, None] / 16.0
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8).repeat(1, 3, 1, 1)
    return [np.ascontiguousarray(image) for image in x.permute(0, 2, 3, 1).numpy()], digits.target[test]


def main(out: Path) -> int:
    manifest = json.loads((out / "manifest.json").read_text())
    images, labels = frames(out, manifest["preprocessing"]["image_size"])
    for artifact in (a for a in manifest["artifacts"] if a["format"] == "tflite"):
        options = vision.ImageClassifierOptions(
            base_options=BaseOptions(model_asset_path=str(out / artifact["path"])), max_results=1)
        with vision.ImageClassifier.create_from_options(options) as classifier:
            names = [classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=image))
                     .classifications[0].categories[0].category_name for image in images]
        accuracy = float(np.mean([name == str(label) for name, label in zip(names, labels)]) * 100)
        print(f"{artifact['target']} ({artifact['path']}, io {artifact.get('io')}): MediaPipe {accuracy:.2f}% "
              f"on {len(labels)} test images; manifest {artifact['test_accuracy']:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "out/digits")))
