"""Segment stage: photo -> object on a square canvas (:class:`ObjectImage`) + the input :class:`Camera`.

The photo's own alpha is used when it is meaningful (some pixels transparent, some opaque); otherwise a backend
mattes the object. The weight-free backend ``matting`` models the background from the image border: a robust
quadratic colour ramp per channel (uniform backdrops, gradients and vignettes), then a pixel is foreground where
its colour departs from that model by more than a threshold scaled to the border's own noise. Luminance departures
count less than chroma ones, so soft shadows on the backdrop stay background. The largest component is kept, its
small holes are filled (large ones, like a handle's opening, show the background) and its edge is feathered.

Framing follows the input camera (:mod:`glimpse3d_core.input_camera`): an unknown camera re-frames the object
(centred, larger side = ``foreground_ratio`` of the canvas); a known one keeps the photo's framing (square
padding about the centre, then resize). Resampling is done on premultiplied colour so edges take no fringe.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage

from glimpse3d_core.backends import rembg_segment  # noqa: F401  (registers the 'rembg' backend)
from glimpse3d_core.backends.base import Backend, BackendSettings, RunContext, backend_field, register, select
from glimpse3d_core.imaging import resize
from glimpse3d_core.input_camera import CANONICAL, InputCameraSpec
from glimpse3d_core.types import Camera, ObjectImage

SegmentBackend = Callable[[np.ndarray], np.ndarray]
"""(rgb [H,W,3] float32 in [0,1]) -> alpha [H,W] float32 in [0,1]: what a segment backend's ``build`` returns."""

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class SegmentationError(ValueError):
    """The photo cannot be segmented (empty or all-foreground mask, NaNs, wrong shape, too large)."""


class MattingSettings(BackendSettings):
    """Segment backend ``matting`` (weight-free): border-colour matting (see the module docstring)."""

    name: Literal["matting"] = "matting"
    border_fraction: float = Field(0.03, gt=0.0, lt=0.25, description="width of the border strip (fraction of side)")
    threshold_sigmas: float = Field(6.0, gt=0.0, description="foreground = colour distance > this many border sigmas")
    min_color_distance: float = Field(0.08, ge=0.0, description="floor of that threshold (RGB units in [0,1])")
    luminance_weight: float = Field(0.35, ge=0.0, le=1.0,
                                    description="weight of luminance vs chroma in the colour distance (shadows)")
    open_px: int = Field(1, ge=0, description="radius of the opening that removes speckle (px at matting size)")
    max_hole_fraction: float = Field(0.01, ge=0.0, description="holes up to this fraction of the object's area "
                                                               "are filled; larger ones are openings")
    feather_px: float = Field(0.8, ge=0.0, description="Gaussian sigma of the soft edge (px at matting size)")
    matting_max_side: int = Field(1024, ge=64, description="photos are matted at most this large, then upsampled")


class SegmentOutput(NamedTuple):
    """The object on its canvas, the input camera for that canvas, and where the alpha came from."""

    image: ObjectImage
    camera: Camera
    alpha_source: str


def _quadratic_basis(ys: np.ndarray, xs: np.ndarray, h: int, w: int) -> np.ndarray:
    y = ys / max(h - 1, 1) * 2 - 1
    x = xs / max(w - 1, 1) * 2 - 1
    return np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=-1)


def _color_distance(diff: np.ndarray, luminance_weight: float) -> np.ndarray:
    """Distance of colour differences [...,3]: chroma fully, luminance scaled by ``luminance_weight``."""
    luma = diff @ LUMA
    chroma = diff - luma[..., None]
    return np.sqrt((chroma**2).sum(-1) + (luminance_weight * luma) ** 2 * 3.0)


def matte_from_border(rgb: np.ndarray, config: MattingSettings) -> np.ndarray:
    """Weight-free matting against a background modelled from the image border (see the module docstring)."""
    h, w = rgb.shape[:2]
    b = max(2, round(config.border_fraction * min(h, w)))
    border = np.zeros((h, w), dtype=bool)
    border[:b], border[-b:], border[:, :b], border[:, -b:] = True, True, True, True
    ys, xs = np.nonzero(border)
    basis = _quadratic_basis(ys.astype(np.float32), xs.astype(np.float32), h, w)
    samples = rgb[ys, xs]
    weights = np.ones(len(samples), dtype=np.float32)
    for _ in range(4):  # iteratively reweighted least squares: border pixels on the object lose their weight
        sw = np.sqrt(weights)[:, None]
        coef, *_ = np.linalg.lstsq(basis * sw, samples * sw, rcond=None)
        dist = _color_distance(samples - basis @ coef, config.luminance_weight)
        scale = max(1.4826 * float(np.median(dist)), 1e-3)
        weights = 1.0 / np.maximum(dist / (2.0 * scale), 1.0) ** 2
    sigma = 1.4826 * float(np.median(dist[weights > 0.5])) if (weights > 0.5).any() else scale
    threshold = max(config.threshold_sigmas * sigma, config.min_color_distance)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    background = _quadratic_basis(yy, xx, h, w) @ coef
    mask = _color_distance(rgb - background, config.luminance_weight) > threshold
    if config.open_px:
        mask = ndimage.binary_opening(mask, structure=_disk(config.open_px))
    return _clean_mask(mask, config.feather_px, config.max_hole_fraction)


def _disk(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return xx**2 + yy**2 <= radius**2


def _clean_mask(mask: np.ndarray, feather_px: float, max_hole_fraction: float) -> np.ndarray:
    """Largest component, small holes filled (large ones are openings that show the background), edge feathered
    -> float32 alpha."""
    labels, count = ndimage.label(mask)
    if count == 0:
        return np.zeros(mask.shape, dtype=np.float32)
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, count + 1))
    mask = labels == 1 + int(np.argmax(sizes))
    holes, hole_count = ndimage.label(ndimage.binary_fill_holes(mask) & ~mask)
    if hole_count:
        hole_sizes = ndimage.sum_labels(holes > 0, holes, index=np.arange(1, hole_count + 1))
        small = np.flatnonzero(hole_sizes <= max_hole_fraction * mask.sum()) + 1
        mask |= np.isin(holes, small)
    alpha = mask.astype(np.float32)
    return ndimage.gaussian_filter(alpha, feather_px) if feather_px > 0 else alpha


def matting(rgb: np.ndarray, settings: MattingSettings) -> np.ndarray:
    """The weight-free ``matting`` backend: :func:`matte_from_border` at most ``matting_max_side`` large."""
    h, w = rgb.shape[:2]
    scale = min(1.0, settings.matting_max_side / max(h, w))
    if scale == 1.0:
        return matte_from_border(rgb, settings)
    small = resize(rgb, (round(h * scale), round(w * scale)))
    return resize(matte_from_border(small, settings), (h, w))


MATTING = register(Backend("matting", "segment", MattingSettings,
                           lambda settings, context: lambda rgb: matting(rgb, settings),
                           description="border-colour matting (weight-free)"))
_BACKEND_TYPE, _BACKEND_DEFAULT = backend_field("segment", fallback="matting")


class SegmentConfig(BaseModel):
    """Segmentation and framing settings; ``backend`` mattes photos without a meaningful alpha (``auto``: rembg
    when its weights are present, else matting)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: _BACKEND_TYPE = Field(_BACKEND_DEFAULT, description="'auto' | 'matting' | 'rembg', with its settings")
    canvas_size: int = Field(256, ge=16, le=4096, description="side of the square output canvas (px)")
    alpha_threshold: float = Field(0.5, gt=0.0, lt=1.0, description="alpha above this counts as object")
    min_transparent_fraction: float = Field(
        0.005, ge=0.0, lt=1.0, description="a photo alpha is meaningful when at least this fraction is transparent")
    max_pixels: int = Field(64_000_000, gt=0, description="larger photos are refused")
    max_foreground_fraction: float = Field(0.98, gt=0.0, le=1.0,
                                           description="a mask covering more of the photo is an error")
    min_foreground_px: int = Field(16, ge=1, description="a mask with fewer pixels is an error")


def _validate(rgb: np.ndarray, alpha: np.ndarray | None, config: SegmentConfig) -> tuple[np.ndarray, np.ndarray | None]:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise SegmentationError(f"expected an RGB image [H,W,3], got shape {rgb.shape}")
    if rgb.shape[0] < 8 or rgb.shape[1] < 8:
        raise SegmentationError(f"image {rgb.shape[1]}x{rgb.shape[0]} is too small to segment")
    if rgb.shape[0] * rgb.shape[1] > config.max_pixels:
        raise SegmentationError(f"image {rgb.shape[1]}x{rgb.shape[0]} exceeds {config.max_pixels} pixels")
    rgb = rgb.astype(np.float32)
    if not np.isfinite(rgb).all():
        raise SegmentationError("image contains NaN or infinite values")
    if rgb.min() < -1e-3 or rgb.max() > 1 + 1e-3:
        raise SegmentationError(f"image values must lie in [0,1], got [{rgb.min():.3g}, {rgb.max():.3g}]")
    if alpha is not None:
        alpha = np.asarray(alpha, dtype=np.float32)
        if alpha.shape != rgb.shape[:2]:
            raise SegmentationError(f"alpha {alpha.shape} does not match the image {rgb.shape[:2]}")
        if not np.isfinite(alpha).all():
            raise SegmentationError("alpha contains NaN or infinite values")
        if alpha.min() < -1e-3 or alpha.max() > 1 + 1e-3:
            raise SegmentationError(f"alpha values must lie in [0,1], got [{alpha.min():.3g}, {alpha.max():.3g}]")
    return np.clip(rgb, 0.0, 1.0), None if alpha is None else np.clip(alpha, 0.0, 1.0)


def has_meaningful_alpha(alpha: np.ndarray | None, config: SegmentConfig) -> bool:
    """Whether the photo's own ``alpha`` is used as it is (some of it transparent) rather than matted."""
    if alpha is None:
        return False
    return float((alpha < config.alpha_threshold).mean()) >= config.min_transparent_fraction


def _check_mask(alpha: np.ndarray, config: SegmentConfig, name: str) -> np.ndarray:
    mask = alpha > config.alpha_threshold
    if mask.sum() < config.min_foreground_px:
        raise SegmentationError(f"{name}: no object found (empty foreground mask)")
    if mask.mean() > config.max_foreground_fraction:
        raise SegmentationError(
            f"{name}: the foreground covers {mask.mean():.0%} of the photo; no background to separate the object from")
    return mask


def _crop_square(premult: np.ndarray, cy: float, cx: float, side: int) -> np.ndarray:
    """The ``side``-pixel square of [H,W,C] centred at (cy, cx), zero-padded where it leaves the image."""
    h, w = premult.shape[:2]
    y0, x0 = round(cy - side / 2), round(cx - side / 2)
    out = np.zeros((side, side, premult.shape[2]), dtype=np.float32)
    sy0, sx0 = max(y0, 0), max(x0, 0)
    sy1, sx1 = min(y0 + side, h), min(x0 + side, w)
    out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = premult[sy0:sy1, sx0:sx1]
    return out


def run(rgb: np.ndarray, alpha: np.ndarray | None = None, config: SegmentConfig | None = None,
        camera_spec: InputCameraSpec = CANONICAL, name: str = "image", backend: SegmentBackend | None = None,
        backend_name: str | None = None) -> SegmentOutput:
    """Segment ``rgb`` (float32 [H,W,3] in [0,1], straight colour) with optional ``alpha`` [H,W] and frame it.

    A photo without a meaningful alpha is matted by ``backend`` (what the run's selection built; its name
    ``backend_name`` is reported as the alpha source), or else by ``config.backend`` selected and built here on the
    CPU."""
    config = config or SegmentConfig()
    rgb, alpha = _validate(rgb, alpha, config)
    if has_meaningful_alpha(alpha, config):
        source = "alpha"
    else:
        if backend is None:
            context = RunContext.resolve("cpu")
            choice = select("segment", config.backend, context.store)
            backend, backend_name = choice.build(context), choice.settings.name
        source = backend_name or "backend"
        alpha = backend(rgb)
    mask = _check_mask(alpha, config, name)

    h, w = mask.shape
    premult = np.concatenate([rgb * alpha[..., None], alpha[..., None]], axis=-1)
    if camera_spec.keep_framing:
        cy, cx, side = h / 2.0, w / 2.0, max(h, w)
    else:
        ys, xs = np.nonzero(mask)
        cy, cx = (ys.min() + ys.max() + 1) / 2.0, (xs.min() + xs.max() + 1) / 2.0
        extent = max(ys.max() + 1 - ys.min(), xs.max() + 1 - xs.min())
        side = max(round(extent / camera_spec.foreground_ratio), 1)
    size = config.canvas_size
    canvas = resize(_crop_square(premult, cy, cx, side), size)
    a = np.clip(canvas[..., 3], 0.0, 1.0)
    colour = np.where(a[..., None] > 1e-4, canvas[..., :3] / np.maximum(a[..., None], 1e-4), 1.0)
    image = ObjectImage(np.clip(colour, 0.0, 1.0).astype(np.float32), a.astype(np.float32), name)
    _check_mask(image.alpha, config, name)
    return SegmentOutput(image, camera_spec.camera(size), source)
