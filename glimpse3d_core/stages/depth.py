"""Depth stage: object image -> relative depth (:class:`DepthMap`, larger = farther, valid = foreground).

The weight-free backend ``inflation`` inflates the silhouette with circular local cross-sections: every
foreground pixel at distance ``D`` from the silhouette edge whose nearest medial-axis point has inscribed radius
``R`` (smoothed across skeleton branches) rises ``sqrt(D (2R - D))`` above the rim (a tube of radius R seen
side-on), lightly smoothed. The depth is
``1 - height / max height``: 0 at the nearest point, 1 on the rim. Outside the silhouette depth is 0, valid False.
Heights are in pixels before that normalisation, so the profile is the silhouette's own (not stretched).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage
from skimage.morphology import medial_axis

from glimpse3d_core.backends import dpt_depth  # noqa: F401  (registers the 'dpt' backend)
from glimpse3d_core.backends.base import Backend, BackendSettings, backend_field, build_stage_backend, register
from glimpse3d_core.types import DepthMap, ObjectImage

DepthBackend = Callable[[ObjectImage], DepthMap]
"""What a depth backend's ``build`` returns."""
MEDIAL_AXIS_SEED = 0
"""Seed of skimage's random tie-breaking in the medial-axis thinning (without it, the depth varies run to run)."""
RADIUS_SMOOTHING = 0.25
"""Gaussian sigma of the local-radius field, as a fraction of the largest inscribed radius."""


class DepthEstimationError(ValueError):
    """No depth can be estimated for this image (e.g. an empty foreground)."""


class InflationSettings(BackendSettings):
    """Depth backend ``inflation`` (weight-free): see the module docstring."""

    name: Literal["inflation"] = "inflation"
    alpha_threshold: float = Field(0.5, gt=0.0, lt=1.0, description="alpha above this is foreground")
    smoothing_px: float = Field(1.5, ge=0.0, description="Gaussian sigma smoothing the inflated height (px)")


def inflation_height(mask: np.ndarray, smoothing_px: float) -> np.ndarray:
    """Height field [H,W] (px) of the silhouette inflated with circular local cross-sections; 0 outside."""
    edge_distance = ndimage.distance_transform_edt(mask)
    skeleton, skeleton_radius = medial_axis(mask, return_distance=True, rng=MEDIAL_AXIS_SEED)
    if not skeleton.any():
        skeleton, skeleton_radius = edge_distance == edge_distance.max(), edge_distance
    _, (iy, ix) = ndimage.distance_transform_edt(~skeleton, return_indices=True)
    radius = skeleton_radius[iy, ix]
    radius_sigma = RADIUS_SMOOTHING * float(edge_distance.max())  # the nearest-skeleton radius jumps between branches
    radius = np.maximum(_smooth_inside(radius, mask, radius_sigma), edge_distance)
    height = np.sqrt(np.clip(edge_distance * (2.0 * radius - edge_distance), 0.0, None))
    return np.where(mask, _smooth_inside(height, mask, smoothing_px), 0.0).astype(np.float32)


def _smooth_inside(values: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing by normalised convolution over ``mask`` (the outside does not pull values down)."""
    if sigma <= 0:
        return values
    weight = ndimage.gaussian_filter(mask.astype(np.float64), sigma)
    return ndimage.gaussian_filter(np.where(mask, values, 0.0), sigma) / np.maximum(weight, 1e-6)


def inflate(image: ObjectImage, config: InflationSettings) -> DepthMap:
    """The weight-free ``inflation`` backend (see the module docstring)."""
    mask = image.alpha > config.alpha_threshold
    if not mask.any():
        raise DepthEstimationError(f"{image.name}: empty foreground, nothing to estimate depth for")
    height = inflation_height(mask, config.smoothing_px)
    depth = np.where(mask, 1.0 - height / max(float(height.max()), 1e-6), 0.0).astype(np.float32)
    return DepthMap(depth=depth, valid=mask, metric=False)


INFLATION = register(Backend("inflation", "depth", InflationSettings,
                             lambda settings, context: lambda image: inflate(image, settings),
                             description="silhouette inflation (weight-free)"))
_BACKEND_TYPE, _BACKEND_DEFAULT = backend_field("depth", fallback="inflation")


class DepthConfig(BaseModel):
    """Depth estimation settings: the backend and its settings (``auto``: DPT when its weights are present, else
    inflation)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: _BACKEND_TYPE = Field(_BACKEND_DEFAULT, description="'auto' | 'inflation' | 'dpt', with its settings")


def run(image: ObjectImage, config: DepthConfig | None = None, backend: DepthBackend | None = None) -> DepthMap:
    """Relative depth of ``image`` (larger = farther; valid = foreground), by ``backend`` (what the run's selection
    built), or else by ``config.backend`` selected and built here on the CPU."""
    return (backend or build_stage_backend("depth", config or DepthConfig()))(image)
