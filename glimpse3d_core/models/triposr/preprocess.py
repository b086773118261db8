"""TripoSR's input pre-processing (run.py / gradio_app.py), from an :class:`ObjectImage`.

1. Crop to the foreground's bounding box (alpha above half a uint8 step, as the original's ``alpha > 0`` on
   8-bit images), pad it to a square centred, then pad that to side / ``foreground_ratio`` (0.85) centred. As
   the original's ``resize_foreground`` (``image[y1:y2, x1:x2]`` with y2, x2 the last foreground row and column),
   the crop leaves out the box's last row and column (kept when the box is one pixel thick): the released model
   saw that framing, and the golden test compares with it pixel for pixel.
2. Composite the straight colour over grey ``background`` (0.5); the padding is background.
3. Resize to ``size`` x ``size`` (bilinear, antialiased). Output [3, size, size] float32 in [0,1], not yet
   ImageNet-normalised (the image tokenizer does that).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from glimpse3d_core.types import ObjectImage

FOREGROUND_ALPHA = 0.5 / 255.0
MAX_INPUT_SIDE = 8192


class EmptyForegroundError(ValueError):
    """The image's alpha has no foreground pixel."""


class InvalidImageError(ValueError):
    """The image holds non-finite values or is larger than we accept."""


class PreprocessConfig(BaseModel):
    """TripoSR pre-processing settings (defaults as the original)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    foreground_ratio: float = Field(0.85, gt=0.0, le=1.0, description="object side / image side after padding")
    background: float = Field(0.5, ge=0.0, le=1.0, description="grey level composited behind the object")


def foreground_box(alpha: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the crop, bottom/right exclusive: the foreground's box without its last row
    and column, as the original (module docstring)."""
    rows = np.flatnonzero((alpha > FOREGROUND_ALPHA).any(axis=1))
    cols = np.flatnonzero((alpha > FOREGROUND_ALPHA).any(axis=0))
    if rows.size == 0:
        raise EmptyForegroundError("the image has no foreground: its alpha mask is empty")
    return int(rows[0]), max(int(rows[-1]), int(rows[0]) + 1), int(cols[0]), max(int(cols[-1]), int(cols[0]) + 1)


class Framing(NamedTuple):
    """Where the conditioning image comes from: the crop box of the input (``top``, ``bottom``, ``left``,
    ``right``; bottom and right exclusive), placed with its top-left corner at (``y0``, ``x0``) of a square canvas
    of ``padded`` input pixels, which is then resized to the conditioning size."""

    top: int
    bottom: int
    left: int
    right: int
    padded: int
    y0: int
    x0: int

    @property
    def window(self) -> tuple[float, float, float]:
        """(centre x, centre y, side) of the square of the input image that the conditioning image shows, in input
        pixels (x right, y down, pixel edges at integers); it may reach beyond the input's edges."""
        return self.left - self.x0 + self.padded / 2, self.top - self.y0 + self.padded / 2, float(self.padded)


def framing(alpha: np.ndarray, foreground_ratio: float) -> Framing:
    """The pre-processing's crop and padding for an input with ``alpha`` [H, W] (module docstring, step 1)."""
    top, bottom, left, right = foreground_box(alpha)
    h, w = bottom - top, right - left
    side = max(h, w)
    padded = int(side / foreground_ratio)
    return Framing(top, bottom, left, right, padded, (side - h) // 2 + (padded - side) // 2,
                   (side - w) // 2 + (padded - side) // 2)


def preprocess(image: ObjectImage, size: int, config: PreprocessConfig | None = None) -> torch.Tensor:
    """The conditioning image [3, size, size] in [0,1] (see the module docstring)."""
    config = config or PreprocessConfig()
    if max(image.size) > MAX_INPUT_SIDE:
        raise InvalidImageError(f"image {image.size} is larger than {MAX_INPUT_SIDE} px on a side")
    if not (np.isfinite(image.rgb).all() and np.isfinite(image.alpha).all()):
        raise InvalidImageError(f"image {image.name!r} holds NaN or infinite values")
    top, bottom, left, right, padded, y0, x0 = framing(image.alpha, config.foreground_ratio)
    rgb = np.clip(image.rgb[top:bottom, left:right], 0.0, 1.0)
    alpha = np.clip(image.alpha[top:bottom, left:right], 0.0, 1.0)[..., None]
    crop = rgb * alpha + config.background * (1.0 - alpha)
    h, w = crop.shape[:2]
    canvas = np.full((padded, padded, 3), config.background, dtype=np.float32)
    canvas[y0 : y0 + h, x0 : x0 + w] = crop
    tensor = torch.from_numpy(canvas).permute(2, 0, 1)[None]
    resized = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return resized[0].clamp(0.0, 1.0)
