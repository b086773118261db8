"""Image files: load any photo as float32 straight RGB + optional alpha, write PNGs atomically, contact sheets.

Loading (Pillow): PNG, JPEG, WebP and the other formats Pillow reads; the EXIF orientation is applied; palette
transparency and LA/RGBA alpha become an alpha channel; 16-bit greyscale keeps its precision (/65535), while
16-bit colour PNGs arrive at 8 bits (Pillow reduces them). Only the first frame of an animation is read. The
pixel count is checked from the header before any decoding, so a decompression bomb is refused cheaply.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from glimpse3d_core.io.atomic import atomic_write
from glimpse3d_core.types import ViewSet

DEFAULT_MAX_PIXELS = 50_000_000
"""Largest image accepted by default (about 8K x 6K); configurable per call."""
UINT8_MAX = 255.0
UINT16_MAX = 65535.0
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I")


class ImageFormatError(ValueError):
    """The file is not a usable image (the message says why)."""


def _open_checked(path: Path, max_pixels: int) -> Image.Image:
    if not path.is_file():
        raise ImageFormatError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ImageFormatError(f"{path}: empty file")
    try:
        with warnings.catch_warnings():  # our own max_pixels check below is the limit that counts
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise ImageFormatError(f"{path}: image too large: {exc}") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageFormatError(f"{path}: not a readable image: {exc}") from exc
    width, height = im.size
    if width == 0 or height == 0:
        raise ImageFormatError(f"{path}: zero-size image ({width}x{height})")
    if width * height > max_pixels:
        raise ImageFormatError(
            f"{path}: image too large: {width}x{height} = {width * height:,} pixels exceeds the limit of {max_pixels:,}"
        )
    return im


def load_image(
    path: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[np.ndarray, np.ndarray | None]:
    """Load an image as (rgb [H,W,3] float32 straight colour in [0,1], alpha [H,W] float32 or None).

    Greyscale is repeated over the three channels; alpha is None when the file has no transparency.
    Raises :class:`ImageFormatError` for a missing, empty, corrupt, truncated, zero-size or too large file.
    """
    path = Path(path)
    im = _open_checked(path, max_pixels)
    try:
        with im, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im.load()
            im = ImageOps.exif_transpose(im)
            if im.mode in SIXTEEN_BIT_MODES:
                grey = np.clip(np.asarray(im, dtype=np.float32) / UINT16_MAX, 0.0, 1.0)
                return np.repeat(grey[..., None], 3, axis=2), None
            has_alpha = "A" in im.getbands() or "a" in im.getbands() or "transparency" in im.info
            arr = np.asarray(im.convert("RGBA" if has_alpha else "RGB"), dtype=np.float32) / UINT8_MAX
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageFormatError(f"{path}: corrupt or truncated image: {exc}") from exc
    if has_alpha:
        return np.ascontiguousarray(arr[..., :3]), np.ascontiguousarray(arr[..., 3])
    return arr, None


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Float values in [0,1] (clipped) to uint8, rounded to nearest."""
    values = np.asarray(values, dtype=np.float32)
    if not np.isfinite(values).all():
        raise ValueError("image values contain NaN or inf")
    return np.round(np.clip(values, 0.0, 1.0) * UINT8_MAX).astype(np.uint8)


def save_png(path: str | os.PathLike[str], rgb: np.ndarray, alpha: np.ndarray | None = None) -> Path:
    """Write rgb [H,W,3] (+ alpha [H,W]) floats in [0,1] as an 8-bit RGBA PNG (RGB if alpha is None), atomically."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"rgb must be a non-empty [H,W,3] array, got {rgb.shape}")
    pixels = to_uint8(rgb)
    if alpha is not None:
        alpha = np.asarray(alpha)
        if alpha.shape != rgb.shape[:2]:
            raise ValueError(f"alpha {alpha.shape} does not match rgb {rgb.shape[:2]}")
        pixels = np.concatenate([pixels, to_uint8(alpha)[..., None]], axis=2)
    with atomic_write(path) as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG")
    return Path(path)


def save_png16(path: str | os.PathLike[str], values: np.ndarray) -> Path:
    """Write a [H,W] uint16 array as a 16-bit greyscale PNG, atomically (e.g. encoded depth)."""
    values = np.asarray(values)
    if values.ndim != 2 or values.dtype != np.uint16:
        raise ValueError(f"expected a [H,W] uint16 array, got {values.shape} {values.dtype}")
    with atomic_write(path) as tmp:
        Image.fromarray(values).save(tmp, format="PNG")
    return Path(path)


def load_png16(path: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a 16-bit greyscale PNG as a [H,W] uint16 array (raw values, no scaling)."""
    path = Path(path)
    im = _open_checked(path, max_pixels)
    with im:
        if im.mode not in SIXTEEN_BIT_MODES:
            raise ImageFormatError(f"{path}: expected a 16-bit greyscale PNG, got mode {im.mode}")
        try:
            return np.asarray(im, dtype=np.int64).clip(0, int(UINT16_MAX)).astype(np.uint16)
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageFormatError(f"{path}: corrupt or truncated image: {exc}") from exc


def contact_sheet(images: np.ndarray, columns: int | None = None, pad: int = 2, background: float = 1.0) -> np.ndarray:
    """Tile images [C,H,W,3] row-major into one [rows*(H+pad)-pad, columns*(W+pad)-pad, 3] float image."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[3] != 3 or len(images) == 0:
        raise ValueError(f"expected images [C,H,W,3] with C>0, got {images.shape}")
    count, h, w, _ = images.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    sheet = np.full((rows * (h + pad) - pad, columns * (w + pad) - pad, 3), background, dtype=np.float32)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        sheet[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = image
    return sheet


def save_contact_sheet(
    path: str | os.PathLike[str], views: ViewSet, columns: int | None = None, background: float = 1.0
) -> Path:
    """Preview PNG of a view set: every view composited on ``background`` (white), tiled in a grid."""
    return save_png(path, contact_sheet(views.composite(background), columns, background=background))
