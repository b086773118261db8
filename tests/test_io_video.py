"""MP4 writer: browser-playable H.264/yuv420p, even size, atomic."""

from __future__ import annotations

import imageio_ffmpeg
import numpy as np
import pytest

from glimpse3d_core.cameras import turntable_rig
from glimpse3d_core.io.video import VideoConfig, write_mp4, write_turntable
from glimpse3d_core.types import ViewSet


def probe(path):
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    frames = list(reader)
    return meta, frames


def test_mp4_is_h264_yuv420p_even(tmp_path):
    frames = np.random.default_rng(0).random((6, 33, 47, 3)).astype(np.float32)
    path = write_mp4(tmp_path / "v.mp4", frames, VideoConfig(fps=12))
    meta, decoded = probe(path)
    assert meta["codec"] == "h264" and meta["pix_fmt"].startswith("yuv420p")
    assert meta["size"] == (48, 34) and meta["fps"] == 12 and len(decoded) == 6
    assert path.read_bytes()[4:8] == b"ftyp"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]


def test_turntable_colours_survive(tmp_path):
    rig = turntable_rig(8, image_size=32)
    rgb = np.zeros((8, 32, 32, 3), np.float32)
    rgb[..., 0] = 1.0  # red object
    alpha = np.zeros((8, 32, 32), np.float32)
    alpha[:, 8:24, 8:24] = 1.0
    _meta, decoded = probe(write_turntable(tmp_path / "t.mp4", ViewSet(rig, rgb, alpha)))
    first = np.frombuffer(decoded[0], np.uint8).reshape(32, 32, 3).astype(int)
    assert np.abs(first[16, 16] - [255, 0, 0]).max() < 20  # object red
    assert np.abs(first[2, 2] - [255, 255, 255]).max() < 20  # white background


def test_bad_frames(tmp_path):
    with pytest.raises(ValueError, match="T,H,W,3"):
        write_mp4(tmp_path / "x.mp4", np.zeros((0, 4, 4, 3)))
    with pytest.raises(ValueError, match="NaN"):
        write_mp4(tmp_path / "x.mp4", np.full((2, 4, 4, 3), np.nan))
    assert not (tmp_path / "x.mp4").exists()
