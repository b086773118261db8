"""Input preparation for SyncDreamer (ldm/util.py ``prepare_inputs``) and alpha recovery for its outputs.

Input: the photo is composited on white; with ``crop_size`` set, the alpha bounding box (alpha > 0) is cropped, its
longer side resized to ``crop_size`` px and pasted centred on a white ``image_size``² canvas (the README's
recommended mode, crop_size = 200 at 256 px); with ``crop_size`` None, the whole photo is padded to a square with
white and resized (generate.py's default). Resizing is :func:`glimpse3d_core.imaging.resize` with
``mode="bicubic"``: the original resizes with PIL's ``BICUBIC``, whose filter (a = -0.5 cubic, widened when
shrinking) torch's antialiased bicubic reproduces, so the model sees the input it was trained on.
Output: [1, 3, S, S] float32 in [-1, 1].
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from glimpse3d_core.imaging import resize
from glimpse3d_core.types import ObjectImage

WHITE = 1.0


class InvalidInputImageError(ValueError):
    """The input image cannot be prepared for SyncDreamer (empty mask, non-finite values, bad crop size)."""


def prepare_input(image: ObjectImage, image_size: int, crop_size: int | None) -> torch.Tensor:
    """The SyncDreamer input tensor [1, 3, image_size, image_size] in [-1, 1] (see the module docstring)."""
    if not (np.isfinite(image.rgb).all() and np.isfinite(image.alpha).all()):
        raise InvalidInputImageError(f"image {image.name!r} holds NaN or infinite values")
    if crop_size is not None and not 0 < crop_size <= image_size:
        raise InvalidInputImageError(f"crop_size must be in 1..{image_size}, got {crop_size}")
    rgb = np.clip(image.composite(WHITE), 0.0, 1.0).astype(np.float32)
    if crop_size is None:
        h, w = image.size
        side = max(h, w)
        canvas = np.full((side, side, 3), WHITE, np.float32)
        top, left = (side - h) // 2, (side - w) // 2
        canvas[top : top + h, left : left + w] = rgb
        out = resize(canvas, image_size, mode="bicubic")
    else:
        rows, cols = np.nonzero(image.alpha > 0)
        if rows.size == 0:
            raise InvalidInputImageError(f"image {image.name!r} has an empty foreground mask")
        crop = rgb[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        h, w = crop.shape[:2]
        scale = crop_size / max(h, w)
        h2, w2 = max(1, int(scale * h)), max(1, int(scale * w))
        out = np.full((image_size, image_size, 3), WHITE, np.float32)
        top, left = (image_size - h2) // 2, (image_size - w2) // 2
        out[top : top + h2, left : left + w2] = resize(crop, (h2, w2), mode="bicubic")
    return torch.from_numpy(out * 2.0 - 1.0).permute(2, 0, 1)[None].contiguous()


def alpha_from_white(rgb: np.ndarray, low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
    """Estimate (straight rgb, alpha) of views generated on a white background.

    rgb [..., H, W, 3] in [0, 1]. A pixel's distance from white is d = max over channels of (1 - c); alpha ramps
    linearly from 0 at d <= ``low`` to 1 at d >= ``high``. Holes fully enclosed by the foreground (alpha >= 0.5)
    are filled with alpha 1 so white parts inside the object stay opaque; white regions that touch the background
    are still lost (a known limit of the white-background protocol). Colour is un-mixed from the white composite,
    c = (rgb - (1 - alpha)) / alpha (white where alpha = 0), so that compositing (c, alpha) on white gives rgb back.
    """
    if not 0.0 <= low < high <= 1.0:
        raise ValueError(f"need 0 <= low < high <= 1, got {low}, {high}")
    d = 1.0 - rgb.min(axis=-1)
    alpha = np.clip((d - low) / (high - low), 0.0, 1.0).astype(np.float32)
    solid = alpha >= 0.5
    flat = solid.reshape(-1, *solid.shape[-2:])
    filled = np.stack([ndimage.binary_fill_holes(m) for m in flat]).reshape(solid.shape)
    alpha = np.where(filled & ~solid, 1.0, alpha).astype(np.float32)
    safe = np.maximum(alpha, 1e-6)[..., None]
    straight = np.where(alpha[..., None] > 0, (rgb - (1.0 - alpha[..., None])) / safe, WHITE)
    return np.clip(straight, 0.0, 1.0).astype(np.float32), alpha
