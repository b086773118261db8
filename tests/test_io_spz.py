"""SPZ writer: header and layout, and a round trip through an independent reader (the viewer's npm package
gaussian-splats-3d, run by node: web/decode-spz.mjs) on a real SH-degree-3 splat."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from glimpse3d_core.io.ply import export_splat, read_ply
from glimpse3d_core.io.spz import FRACTIONAL_BITS, MAGIC, VERSION, write_spz
from glimpse3d_core.orientation import RDF_TO_RUB, rotate_gaussians
from glimpse3d_core.types import SH_C0

ROOT = Path(__file__).resolve().parents[1]
FRUIT = "splats/supersplat_fruit_drops/fruit_drops_minimal.ply"


def _node_reader() -> list[str]:
    node = shutil.which("node")
    if node is None or not (ROOT / "web/node_modules/@mkkellogg/gaussian-splats-3d").is_dir():
        reason = "node or web/node_modules missing (make viewer)"
        if os.environ.get("GLIMPSE3D_REQUIRE_SERVICES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return [node, str(ROOT / "web/decode-spz.mjs")]


def test_header_and_layout(shared_data, tmp_path):
    g = read_ply(shared_data / FRUIT)
    path = export_splat(tmp_path / "fruit.spz", g, format="spz")
    raw = gzip.decompress(path.read_bytes())
    magic, version, count, degree, bits, flags, reserved = struct.unpack("<IIIBBBB", raw[:16])
    assert (magic, version, count, degree, bits, flags, reserved) == (MAGIC, VERSION, len(g), 3, FRACTIONAL_BITS, 0, 0)
    per_gaussian = 9 + 1 + 3 + 3 + 3 + 45  # positions, alpha, colour, scales, rotation, SH degree 3
    assert len(raw) == 16 + count * per_gaussian


def test_rejects_positions_outside_the_fixed_point_range(shared_data, tmp_path):
    g = read_ply(shared_data / FRUIT)
    g.means = g.means * 1e4
    with pytest.raises(ValueError, match="24-bit fixed point"):
        write_spz(tmp_path / "far.spz", g)
    assert not (tmp_path / "far.spz").exists()


def test_independent_reader_decodes_what_was_written(shared_data, tmp_path):
    reader = _node_reader()
    g = read_ply(shared_data / FRUIT)
    path = write_spz(tmp_path / "fruit.spz", g)
    out = subprocess.run([*reader, str(path)], capture_output=True, text=True, timeout=300, check=True)
    decoded = json.loads(out.stdout)
    rub = rotate_gaussians(g, RDF_TO_RUB)  # SPZ stores the PLY's frame flipped to RUB
    assert decoded["count"] == len(g)

    centers = np.array(decoded["centers"])
    assert np.abs(centers - rub.means.numpy()).max() <= 0.5 / 2**FRACTIONAL_BITS + 1e-6

    log_scales = rub.log_scales.numpy()
    in_range = ((log_scales > -10) & (log_scales < 5.9)).all(1)
    assert in_range.mean() > 0.95
    err = np.abs(np.log(np.array(decoded["scales"])) - log_scales)[in_range]
    assert err.max() <= 1 / 32 + 1e-3  # 8 bits, 16 steps per unit of log-scale

    q = torch.nn.functional.normalize(rub.quats, dim=1).numpy()
    dots = np.abs((np.array(decoded["rotations"]) * q).sum(1))
    assert np.quantile(dots, 0.01) > 0.99

    colors = np.array(decoded["colors"])
    rgb = np.clip((0.5 + SH_C0 * rub.sh0.reshape(-1, 3).numpy()) * 255, 0, 255)
    assert np.abs(colors[:, :3] - rgb).max() <= 3  # the 0.15-scaled 8-bit DC term, then the reader's 8 bits
    alpha = torch.sigmoid(rub.opacity_logits).numpy() * 255
    assert np.abs(colors[:, 3] - alpha).max() <= 1.01
