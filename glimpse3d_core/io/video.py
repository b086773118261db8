"""MP4 video (imageio-ffmpeg's bundled ffmpeg): H.264 (libx264), yuv420p, even frame size, ``+faststart`` — the
combination every browser's <video> element plays. Writes are atomic."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import numpy as np

from glimpse3d_core.io.atomic import atomic_write
from glimpse3d_core.io.images import to_uint8
from glimpse3d_core.types import ViewSet


@dataclass(frozen=True)
class VideoConfig:
    """H.264 encoding: ``fps`` frames per second, constant-rate-factor ``crf`` (0 lossless .. 51 worst; 18 is
    visually lossless), x264 ``preset``."""

    fps: int = 24
    crf: int = 18
    preset: str = "medium"


def _even(frames: np.ndarray) -> np.ndarray:
    """Pad height/width to even by repeating the last row/column (yuv420p subsamples colour 2x2)."""
    _, h, w, _ = frames.shape
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def write_mp4(path: str | os.PathLike[str], frames: np.ndarray, config: VideoConfig = VideoConfig()) -> Path:
    """Encode RGB frames [T,H,W,3] (float in [0,1] or uint8) to an H.264/yuv420p MP4, atomically."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[3] != 3 or min(frames.shape[:3]) == 0:
        raise ValueError(f"frames must be a non-empty [T,H,W,3] array, got {frames.shape}")
    pixels = _even(frames if frames.dtype == np.uint8 else to_uint8(frames))
    _, h, w, _ = pixels.shape
    with atomic_write(path) as tmp:
        writer = imageio_ffmpeg.write_frames(
            str(tmp),
            (w, h),
            fps=config.fps,
            codec="libx264",
            pix_fmt_in="rgb24",
            pix_fmt_out="yuv420p",
            quality=None,
            macro_block_size=1,
            output_params=["-crf", str(config.crf), "-preset", config.preset, "-movflags", "+faststart"],
        )
        writer.send(None)
        for frame in pixels:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
    return Path(path)


def write_turntable(
    path: str | os.PathLike[str], views: ViewSet, config: VideoConfig = VideoConfig(), background: float = 1.0
) -> Path:
    """A turntable MP4 from rendered views (in orbit order), composited on ``background`` (white)."""
    return write_mp4(path, views.composite(background), config)
