import json

import numpy as np
import pytest

from glimpse3d_core.cameras import look_at, orbit_position, rig_from_camera16_json, syncdreamer16_rig

CAMERA16_PATH = "syncdreamer_eval/syncdreamer_gso_chicken/camera-16.json"


@pytest.fixture(scope="module")
def camera16(shared_data):
    return json.loads((shared_data / CAMERA16_PATH).read_text())


def test_syncdreamer_rig_equals_camera16_json(camera16):
    ours = syncdreamer16_rig()
    theirs = rig_from_camera16_json(camera16)
    assert (ours.width, ours.height) == (256, 256)
    np.testing.assert_allclose(ours.Ks, theirs.Ks, atol=1e-6)
    np.testing.assert_allclose(ours.viewmats, theirs.viewmats, atol=2e-6)


def test_look_at_puts_target_on_the_optical_axis_and_up_upwards():
    eye = orbit_position(40.0, 20.0, 2.0)
    vm = look_at(eye)
    origin_cam = vm @ np.array([0, 0, 0, 1.0])
    np.testing.assert_allclose(origin_cam[:2], 0, atol=1e-9)
    assert origin_cam[2] == pytest.approx(2.0)
    up_cam = vm[:3, :3] @ np.array([0, 0, 1.0])
    assert up_cam[1] < 0  # world +Z points up in the image (OpenCV y is down)


def test_scaled_rig_keeps_field_of_view():
    rig = syncdreamer16_rig(512)
    assert rig.Ks[0, 0, 0] == pytest.approx(560.0)
    assert rig.Ks[0, 0, 2] == pytest.approx(256.0)
