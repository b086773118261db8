"""Depth stage (weight-free silhouette inflation)."""

from __future__ import annotations

import numpy as np
import pytest

from glimpse3d_core.io.images import load_image
from glimpse3d_core.stages import depth, segment
from glimpse3d_core.stages.depth import DepthConfig, DepthEstimationError
from glimpse3d_core.types import ObjectImage


def _disc_image(size: int = 96, radius: float = 30.0) -> tuple[ObjectImage, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    r = np.hypot(yy - size / 2, xx - size / 2)
    alpha = (r <= radius).astype(np.float32)
    return ObjectImage(np.full((size, size, 3), 0.5, np.float32), alpha), r


def test_a_disc_inflates_to_a_round_dome():
    image, r = _disc_image()
    out = depth.run(image, DepthConfig(backend=depth.InflationSettings(smoothing_px=0.0)))
    assert not out.metric
    np.testing.assert_array_equal(out.valid, image.alpha > 0.5)
    assert (out.depth[~out.valid] == 0).all()
    # circular cross-section: relative height sqrt(1 - (r/R)^2), depth = 1 - height
    inside = out.valid & (r < 26)
    expected = 1.0 - np.sqrt(1.0 - (r[inside] / 30.0) ** 2)
    np.testing.assert_allclose(out.depth[inside], expected, atol=0.08)
    assert out.depth[out.valid].min() == pytest.approx(0.0, abs=1e-6)
    assert np.unravel_index(np.argmin(np.where(out.valid, out.depth, 9)), r.shape) in {(47, 47), (47, 48), (48, 47),
                                                                                        (48, 48)}


def test_real_photo_depth_is_nearest_inside_and_farthest_at_the_rim(shared_data):
    rgb, alpha = load_image(shared_data / "inputs/threestudio/teddy_rgba.png")
    image = segment.run(rgb, alpha, segment.SegmentConfig(canvas_size=128)).image
    out = depth.run(image)
    np.testing.assert_array_equal(out.valid, image.alpha > 0.5)
    values = out.depth[out.valid]
    assert values.min() >= 0.0 and values.max() <= 1.0 and np.isfinite(out.depth).all()
    rim = out.valid & ~np.pad(out.valid, 1)[2:, 1:-1] | out.valid & ~np.pad(out.valid, 1)[:-2, 1:-1]
    assert out.depth[rim].mean() > values.mean() + 0.2 and values.mean() > 0.2
    for _ in range(3):  # deterministic: the medial axis's random tie-breaking is seeded
        np.testing.assert_array_equal(depth.run(image).depth, out.depth)


def test_empty_foreground_and_unknown_backend_are_errors():
    image = ObjectImage(np.zeros((16, 16, 3), np.float32), np.zeros((16, 16), np.float32))
    with pytest.raises(DepthEstimationError, match="empty foreground"):
        depth.run(image)
    with pytest.raises(ValueError, match="expected tags"):
        DepthConfig(backend="midas-nope")
