"""Niantic's ``.spz`` splat format, version 2, written by the reference library's quantisation rules.

No maintained Python package writes SPZ (PyPI's ``spz`` 0.0.1 is an unbuilt Rust sdist), so this module
implements the writer; the tests read its files with an independent decoder (the viewer's npm package,
``@mkkellogg/gaussian-splats-3d``'s SpzLoader, in Chromium).

Layout (gzip-compressed as a whole), little endian: a 16-byte header ``magic 0x5053474e (u32), version 2 (u32),
count (u32), SH degree (u8), fractional bits (u8), flags (u8; 1 = antialiased), reserved (u8)``, then, each for
all Gaussians in turn: positions (3 x 24-bit signed fixed point, ``round(x · 2^bits)``), alphas
(``sigmoid(logit) · 255``), colours (the SH DC term: ``f_dc · 0.15 · 255 + 127.5``), log-scales
(``(s + 10) · 16``), rotations (unit quaternion x, y, z with w >= 0: ``q · 127.5 + 127.5``), higher-order SH
(coefficient-major, channel-minor, ``round(c · 128) + 128`` snapped to buckets of 8 for degree 1 and of 16 above).
Every 8-bit value is rounded and clamped to 0..255.

Frame: SPZ stores RUB (x right, y up, z back: OpenGL); the INRIA PLY frame is RDF (y down, z forward). As the
reference library does when converting from PLY, :func:`write_spz` takes Gaussians in the PLY's frame and turns
them by 180° about x (y and z flipped) on the way out.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import torch

from glimpse3d_core.io.atomic import atomic_write_bytes
from glimpse3d_core.orientation import RDF_TO_RUB, rotate_gaussians
from glimpse3d_core.types import Gaussians

MAGIC = 0x5053474E
VERSION = 2
FRACTIONAL_BITS = 12
COLOR_SCALE = 0.15
SH1_BUCKET, SH_REST_BUCKET = 8, 16


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def _quantize_sh(x: np.ndarray, bucket: int) -> np.ndarray:
    q = np.round(x * 128.0).astype(np.int64) + 128
    q = (q + bucket // 2) // bucket * bucket
    return np.clip(q, 0, 255).astype(np.uint8)


def encode_spz(gaussians: Gaussians) -> bytes:
    """The gzip-compressed SPZ v2 bytes of ``gaussians`` given in the PLY (RDF) frame."""
    g = rotate_gaussians(gaussians, RDF_TO_RUB)
    n, degree = len(g), g.sh_degree
    means = g.means.double().numpy()
    limit = 2 ** (23 - FRACTIONAL_BITS)
    if np.abs(means).max() >= limit:
        raise ValueError(f"SPZ positions must lie within ±{limit} (24-bit fixed point with {FRACTIONAL_BITS} "
                         f"fractional bits); the splat reaches {np.abs(means).max():.4g}")
    fixed = np.round(means * (1 << FRACTIONAL_BITS)).astype(np.int64) & 0xFFFFFF
    positions = np.stack([fixed & 0xFF, (fixed >> 8) & 0xFF, (fixed >> 16) & 0xFF], -1).astype(np.uint8)
    alphas = _u8(torch.sigmoid(g.opacity_logits).double().numpy() * 255.0)
    colors = _u8(g.sh0.reshape(n, 3).double().numpy() * (COLOR_SCALE * 255.0) + 127.5)
    scales = _u8((g.log_scales.double().numpy() + 10.0) * 16.0)
    q = torch.nn.functional.normalize(g.quats.double(), dim=1).numpy()  # w x y z
    q = q * np.where(q[:, :1] < 0, -1.0, 1.0)
    rotations = _u8(q[:, 1:] * 127.5 + 127.5)
    sh = g.shN.double().numpy().reshape(n, -1)  # [N, K*3]: coefficient-major, channel-minor
    sh_bytes = np.concatenate([_quantize_sh(sh[:, :9], SH1_BUCKET), _quantize_sh(sh[:, 9:], SH_REST_BUCKET)], 1)
    header = struct.pack("<IIIBBBB", MAGIC, VERSION, n, degree, FRACTIONAL_BITS, 0, 0)
    body = b"".join(a.tobytes() for a in (positions, alphas, colors, scales, rotations, sh_bytes))
    return gzip.compress(header + body, mtime=0)


def write_spz(path: str | os.PathLike[str], gaussians: Gaussians) -> Path:
    """Write ``gaussians`` (in the PLY's frame) as an SPZ v2 file, atomically."""
    return atomic_write_bytes(path, encode_spz(gaussians))
