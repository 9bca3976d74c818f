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
            return center_square(eight_bit_rgb(image, path), size)
    except Image.DecompressionBombError as e:
        raise ValueError(f"image {path} is too large to decode safely: {e}") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e


def eight_bit_rgb(image, path):
    """`image` as 8-bit RGB, each value scaled from its own bit depth: Pillow's convert
    clips a 16-bit greyscale image (0-65535) to 255, so a ramp would become white. 16-bit
    values are divided by 257; float images must hold [0, 1]; 32-bit integer images must
    hold 0-65535 (a 16-bit PNG that Pillow reads as 32-bit). ValueError naming the file
    for values with no such scale."""
    from PIL import Image

    if image.mode in ("RGB", "L", "P", "RGBA", "LA", "1", "CMYK", "YCbCr", "PA", "La", "RGBa", "LAB", "HSV"):
        return image.convert("RGB")
    values = np.asarray(image)
    if image.mode.startswith("I"):
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(f"image {path} holds {image.mode} integers from {values.min()} to {values.max()}, "
                             "outside 16 bits: save it as an 8- or 16-bit image")
        grey = (values.astype(np.float64) / 257.0).round().astype(np.uint8)
    elif image.mode == "F":
        if values.size and (not np.isfinite(values).all() or values.min() < 0 or values.max() > 1):
            raise ValueError(f"image {path} holds floats outside [0, 1] (from {np.nanmin(values):g} to "
                             f"{np.nanmax(values):g}): save it as an 8- or 16-bit image, or scale it to [0, 1]")
        grey = (values.astype(np.float64) * 255.0).round().astype(np.uint8)
    else:
        raise ValueError(f"image {path} has mode {image.mode}, which edgekiln cannot scale to 8-bit RGB")
    return Image.fromarray(grey, mode="L").convert("RGB")


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
