"""Image loading/writing: modes, EXIF orientation, bad files, atomic PNG writes and contact sheets."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from glimpse3d_core.cameras import syncdreamer16_rig
from glimpse3d_core.io.images import (
    ImageFormatError,
    contact_sheet,
    load_image,
    load_png16,
    save_contact_sheet,
    save_png,
    save_png16,
)
from glimpse3d_core.types import ViewSet

EXIF_ORIENTATION = 0x0112
ROTATE_90_CW = 6  # EXIF: the stored image must be rotated 90° clockwise for display


def gradient(h: int = 6, w: int = 8) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 30, y * 40, (x + y) * 10], axis=2).astype(np.uint8)


def test_real_inputs_rgba_and_rgb(shared_data):
    rgb, alpha = load_image(shared_data / "inputs/dreamgaussian/ghost_rgba.png")
    assert rgb.dtype == np.float32 and rgb.shape[2] == 3 and alpha is not None
    assert alpha.shape == rgb.shape[:2] and 0 < alpha.mean() < 1
    rgb, alpha = load_image(shared_data / "inputs/triposr/chair.png")
    assert rgb.ndim == 3 and rgb.min() >= 0.0 and rgb.max() <= 1.0


@pytest.mark.parametrize(("mode", "suffix"), [("RGB", ".jpg"), ("RGB", ".webp"), ("L", ".png"), ("LA", ".png"),
                                             ("CMYK", ".jpg"), ("F", ".tif")])
def test_modes_and_formats(tmp_path, mode, suffix):
    path = tmp_path / f"im{suffix}"
    Image.fromarray(gradient()).convert(mode).save(path)
    rgb, alpha = load_image(path)
    assert rgb.shape == (6, 8, 3) and rgb.dtype == np.float32
    assert (alpha is not None) == ("A" in mode)
    if mode in ("L", "LA"):
        assert np.array_equal(rgb[..., 0], rgb[..., 2])


@pytest.mark.parametrize(("mode", "suffix"), [("CMYK", ".jpg"), ("F", ".tif"), ("I;16", ".png"), ("RGBA", ".png")])
def test_source_thumbnail_of_every_mode(tmp_path, mode, suffix):
    """The source_image asset's inline preview is a PNG of the photo whatever the photo's mode (a CMYK JPEG once
    failed the asset: PNG has no CMYK)."""
    import base64
    import io
    import re

    from glimpse3d_assets.io_manager import markdown_thumbnail

    path = tmp_path / f"im{suffix}"
    image = Image.fromarray(gradient())
    (image.convert("L").convert(mode) if mode in ("F", "I;16") else image.convert(mode)).save(path)
    text = markdown_thumbnail(path.read_bytes(), "photo")
    png = base64.b64decode(re.search(r"base64,([A-Za-z0-9+/=]+)\)", text).group(1))
    assert Image.open(io.BytesIO(png)).size == (8, 6)


def test_rgba_png_exact_and_straight(tmp_path):
    rgba = np.concatenate([gradient(), np.full((6, 8, 1), 100, np.uint8)], axis=2)
    Image.fromarray(rgba).save(tmp_path / "a.png")
    rgb, alpha = load_image(tmp_path / "a.png")
    assert np.array_equal(np.round(rgb * 255).astype(np.uint8), rgba[..., :3])  # straight, not premultiplied
    assert np.allclose(alpha, 100 / 255)


def test_palette_transparency_and_16bit(tmp_path):
    pal = Image.fromarray(gradient()).convert("P")
    pal.info["transparency"] = 0
    pal.save(tmp_path / "p.png", transparency=0)
    assert load_image(tmp_path / "p.png")[1] is not None
    values = np.array([[0, 1, 65535], [30000, 2, 3]], dtype=np.uint16)
    save_png16(tmp_path / "d.png", values)
    assert np.array_equal(load_png16(tmp_path / "d.png"), values)
    rgb, alpha = load_image(tmp_path / "d.png")
    assert alpha is None and np.isclose(rgb[1, 0, 1], 30000 / 65535)
    with pytest.raises(ImageFormatError, match="16-bit"):
        load_png16(tmp_path / "p.png")


def test_exif_orientation_applied(tmp_path):
    im = Image.fromarray(gradient(6, 8))
    exif = im.getexif()
    exif[EXIF_ORIENTATION] = ROTATE_90_CW
    im.save(tmp_path / "o.jpg", exif=exif, quality=100)
    rgb, _ = load_image(tmp_path / "o.jpg")
    assert rgb.shape == (8, 6, 3)


def test_bad_files(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image at all")
    Image.fromarray(gradient(64, 64)).save(tmp_path / "full.png")
    blob = (tmp_path / "full.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(blob[: len(blob) // 2])
    for name, pattern in [("empty.png", "empty"), ("text.png", "not a readable"), ("trunc.png", "truncated"),
                          ("missing.png", "no such file")]:
        with pytest.raises(ImageFormatError, match=pattern):
            load_image(tmp_path / name)
    with pytest.raises(ImageFormatError, match="too large"):
        load_image(tmp_path / "full.png", max_pixels=64 * 64 - 1)


def test_decompression_bomb_refused_before_decoding(tmp_path):
    Image.new("L", (4000, 4000)).save(tmp_path / "bomb.png", optimize=True)  # 16 MP in a tiny file
    assert (tmp_path / "bomb.png").stat().st_size < 100_000
    with pytest.raises(ImageFormatError, match="too large"):
        load_image(tmp_path / "bomb.png", max_pixels=1_000_000)


def test_save_png_round_trip_and_errors(tmp_path):
    rgb = gradient().astype(np.float32) / 255
    alpha = np.linspace(0, 1, 48, dtype=np.float32).reshape(6, 8)
    path = save_png(tmp_path / "sub" / "x.png", rgb, alpha)
    assert Image.open(path).mode == "RGBA"
    back, back_alpha = load_image(path)
    assert np.abs(back - rgb).max() < 0.5 / 255 + 1e-6 and np.abs(back_alpha - alpha).max() <= 0.5 / 255 + 1e-6
    assert Image.open(save_png(tmp_path / "y.png", rgb)).mode == "RGB"
    with pytest.raises(ValueError, match="NaN"):
        save_png(tmp_path / "n.png", np.full((2, 2, 3), np.nan))
    with pytest.raises(ValueError, match="alpha"):
        save_png(tmp_path / "n.png", rgb, alpha[:3])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub", "y.png"]


def test_contact_sheet(tmp_path):
    rig = syncdreamer16_rig(16)
    rgb = np.zeros((16, 16, 16, 3), np.float32)
    alpha = np.zeros((16, 16, 16), np.float32)
    alpha[3, 4:8, 4:8] = 1.0
    sheet = contact_sheet(ViewSet(rig, rgb, alpha).composite(), columns=4, pad=2)
    assert sheet.shape == (4 * 18 - 2, 4 * 18 - 2, 3)
    assert sheet[4, 3 * 18 + 4].sum() == 0 and sheet[0, 0].sum() == 3  # view 3 = row 0, column 3; white elsewhere
    path = save_contact_sheet(tmp_path / "sheet.png", ViewSet(rig, rgb, alpha))
    assert Image.open(path).size == (70, 70)
