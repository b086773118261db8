"""Segment stage on real photos: the photo's alpha, border matting, framing, and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from glimpse3d_core.input_camera import CANONICAL, SYNCDREAMER16_VIEW0
from glimpse3d_core.io.images import load_image
from glimpse3d_core.stages import segment
from glimpse3d_core.stages.segment import SegmentationError, SegmentConfig

RGBA_PHOTOS = ["dreamgaussian/catstatue_rgba.png", "lgm/bird_rgba.png", "threestudio/teddy_rgba.png",
               "threestudio/cactus_rgba.png"]
CHICKEN_VIEW0 = "syncdreamer_eval/syncdreamer_gso_chicken/chicken-gt/000.png"


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def _bbox(mask: np.ndarray) -> tuple[float, float, int]:
    ys, xs = np.nonzero(mask)
    return (ys.min() + ys.max() + 1) / 2, (xs.min() + xs.max() + 1) / 2, max(np.ptp(ys) + 1, np.ptp(xs) + 1)


@pytest.mark.parametrize("photo", RGBA_PHOTOS)
def test_matting_recovers_the_alpha_of_an_rgba_photo_composited_on_white(shared_data, photo):
    rgb, alpha = load_image(shared_data / "inputs" / photo)
    composited = rgb * alpha[..., None] + (1.0 - alpha[..., None])
    estimated = segment.matting(composited, segment.MattingSettings())
    assert estimated.shape == alpha.shape and estimated.dtype == np.float32
    assert estimated.min() >= 0.0 and estimated.max() <= 1.0
    assert _iou(estimated > 0.5, alpha > 0.5) > 0.95


def test_rgba_photo_keeps_its_alpha_and_is_reframed(shared_data):
    rgb, alpha = load_image(shared_data / "inputs" / RGBA_PHOTOS[0])
    out = segment.run(rgb, alpha, SegmentConfig(canvas_size=128), CANONICAL, name="cat")
    assert out.alpha_source == "alpha"
    assert out.image.size == (128, 128) and out.image.name == "cat"
    cy, cx, side = _bbox(out.image.alpha > 0.5)
    assert abs(side - 0.85 * 128) <= 2
    assert abs(cy - 64) <= 1.5 and abs(cx - 64) <= 1.5
    # colours survive the premultiplied resampling: mean foreground colour as in the photo
    np.testing.assert_allclose(out.image.rgb[out.image.alpha > 0.9].mean(0), rgb[alpha > 0.9].mean(0), atol=0.03)
    np.testing.assert_allclose(out.camera.viewmat, CANONICAL.camera(128).viewmat)


def test_rgb_photo_on_grey_backdrop_is_matted_without_its_shadow_and_keeps_the_handle_opening(shared_data):
    rgb, alpha = load_image(shared_data / "inputs/triposr/teapot.png")
    assert alpha is None
    out = segment.run(rgb, None, SegmentConfig(canvas_size=128))
    assert out.alpha_source == "matting"
    mask = out.image.alpha > 0.5
    assert 0.25 < mask.mean() < 0.6
    assert (ndimage.binary_fill_holes(mask) & ~mask).sum() > 20  # the handle's opening stays open
    # the soft shadow under the pot is darker grey, not red: the matte holds (almost) only saturated pixels
    saturation = out.image.rgb.max(-1) - out.image.rgb.min(-1)
    assert (saturation[mask] > 0.15).mean() > 0.97
    assert (out.image.alpha[[0, -1]] == 0).all() and (out.image.alpha[:, [0, -1]] == 0).all()


def test_opaque_alpha_is_not_meaningful_and_falls_back_to_matting(shared_data):
    rgb, alpha = load_image(shared_data / "inputs" / RGBA_PHOTOS[1])
    composited = rgb * alpha[..., None] + (1.0 - alpha[..., None])
    out = segment.run(composited, np.ones_like(alpha), SegmentConfig(canvas_size=64))
    assert out.alpha_source == "matting"


def test_known_camera_keeps_the_framing(shared_data):
    rgb, alpha = load_image(shared_data / CHICKEN_VIEW0)
    same = segment.run(rgb, alpha, SegmentConfig(canvas_size=256), SYNCDREAMER16_VIEW0)
    np.testing.assert_allclose(same.image.alpha, alpha, atol=1e-5)
    half = segment.run(rgb, alpha, SegmentConfig(canvas_size=128), SYNCDREAMER16_VIEW0)
    block_mean = alpha.reshape(128, 2, 128, 2).mean((1, 3))
    assert _iou(half.image.alpha > 0.5, block_mean > 0.5) > 0.97
    np.testing.assert_allclose(np.array(_bbox(half.image.alpha > 0.5)), np.array(_bbox(alpha > 0.5)) / 2, atol=1.0)
    assert half.camera.K[0, 0] == pytest.approx(140.0)


def test_non_square_known_photo_is_padded_about_its_centre():
    rgb = np.ones((40, 80, 3), np.float32)
    alpha = np.zeros((40, 80), np.float32)
    alpha[10:20, 50:60] = 1.0  # right of centre, above the middle
    config = SegmentConfig(canvas_size=80, backend={"name": "matting", "feather_px": 0})
    out = segment.run(rgb, alpha, config, SYNCDREAMER16_VIEW0)
    cy, cx, side = _bbox(out.image.alpha > 0.5)
    assert (cy, cx, side) == (35.0, 55.0, 10)  # 20 rows of padding above, none beside


@pytest.mark.parametrize(
    ("rgb", "alpha", "message"),
    [
        (np.ones((64, 64, 3), np.float32), None, "no object"),
        (np.full((64, 64, 3), 0.5, np.float32), np.zeros((64, 64), np.float32), "no object"),
        (np.full((64, 64, 3), np.nan, np.float32), None, "NaN"),
        (np.full((64, 64, 3), 2.0, np.float32), None, r"\[0,1\]"),
        (np.ones((64, 64), np.float32), None, "RGB"),
        (np.ones((64, 64, 3), np.float32), np.ones((32, 32), np.float32), "does not match"),
        (np.ones((64, 64, 3), np.float32), np.full((64, 64), 255.0, np.float32), r"alpha values must lie in \[0,1\]"),
        (np.ones((4, 4, 3), np.float32), None, "too small"),
    ],
)
def test_bad_inputs_raise_a_clear_segmentation_error(rgb, alpha, message):
    with pytest.raises(SegmentationError, match=message):
        segment.run(rgb, alpha)


def test_all_foreground_is_an_error():
    alpha = np.ones((100, 100), np.float32)
    alpha[:1] = 0.0  # 1% transparent: a meaningful alpha that leaves no background
    with pytest.raises(SegmentationError, match="covers"):
        segment.run(np.full((100, 100, 3), 0.5, np.float32), alpha)


def test_too_large_and_unknown_backend_are_refused():
    with pytest.raises(SegmentationError, match="exceeds"):
        segment.run(np.ones((64, 64, 3), np.float32), None, SegmentConfig(max_pixels=1000))
    with pytest.raises(ValueError, match="expected tags"):
        SegmentConfig(backend="nope")
