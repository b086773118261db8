"""Input camera presets (glimpse3d_core.input_camera)."""

from __future__ import annotations

import numpy as np
import pytest

from glimpse3d_core.cameras import syncdreamer16_rig
from glimpse3d_core.input_camera import CANONICAL, SYNCDREAMER16_VIEW0, explicit, preset


@pytest.mark.parametrize("size", [256, 128])
def test_syncdreamer16_preset_is_view0_of_the_rig(size):
    cam = preset("syncdreamer16").camera(size)
    view0 = syncdreamer16_rig(size)[0]
    np.testing.assert_allclose(cam.viewmat, view0.viewmat, atol=1e-6)
    np.testing.assert_allclose(cam.K, view0.K, atol=1e-6)
    assert preset("syncdreamer16").keep_framing


def test_canonical_camera_spans_one_unit_with_the_reframed_silhouette():
    spec = preset("canonical")
    assert spec is CANONICAL and not spec.keep_framing
    assert spec.foreground_ratio * spec.reference_size * spec.distance / spec.focal_px == pytest.approx(1.0)
    cam = spec.camera(256)
    centre = cam.center
    assert centre[0] > 0 and abs(centre[1]) < 1e-9  # on the +X side
    assert np.degrees(np.arcsin(centre[2] / np.linalg.norm(centre))) == pytest.approx(spec.elevation_deg)
    origin = cam.viewmat @ np.array([0.0, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(origin[:2], 0.0, atol=1e-9)  # looks at the origin


def test_explicit_camera_is_known_and_validated():
    spec = explicit(elevation_deg=10.0, distance=2.0, focal_px=300.0)
    assert spec.keep_framing and spec.camera(128).K[0, 0] == pytest.approx(150.0)
    assert np.linalg.norm(spec.camera(64).center) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        explicit(elevation_deg=95.0, distance=1.0, focal_px=100.0)
    with pytest.raises(ValueError, match="unknown input camera"):
        preset("fisheye")
    assert SYNCDREAMER16_VIEW0.distance == 1.5
