"""Reading images from disk as the models see them: square, RGB, uint8."""

from __future__ import annotations

import numpy as np

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def read_square(path, size: int) -> np.ndarray:
    """The image file at `path` as the models see it: RGB, square, uint8 HWC. ValueError
    naming the file when it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            # JPEG decodes straight at a power-of-two reduction still at least `size` on its
            # shorter side: memory follows the model's input, not the file.
            if image.format == "JPEG" and min(image.size) >= 2 * size:
                image.draft("RGB", _draft_size(image.size, size))
            return center_square(image.convert("RGB"), size)
    except Image.DecompressionBombError as e:
        raise ValueError(f"image {path} is too large to decode safely: {e}") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e


def _draft_size(full: tuple[int, int], size: int) -> tuple[int, int]:
    """The size to ask JPEG's draft mode for: the image scaled so its shorter side is `size`
    (draft picks the smallest DCT scale at least that large)."""
    scale = size / min(full)
    return max(1, round(full[0] * scale)), max(1, round(full[1] * scale))


def center_square(image, size: int) -> np.ndarray:
    """Resize the shorter side to `size`, then center-crop (the usual eval transform)."""
    from PIL import Image

    w, h = image.size
    scale = size / min(w, h)
    image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)
