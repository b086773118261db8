"""INRIA 3DGS PLY reading/writing against the real splats in shared/data and against plyfile."""

from __future__ import annotations

import numpy as np
import plyfile
import pytest
import torch

from glimpse3d_core.io.ply import (
    PlyFormatError,
    export_splat,
    inria_property_names,
    inspect_ply,
    read_ply,
    write_ply,
)
from glimpse3d_core.types import Gaussians

DONUT = "splats/gshairlod_donut_mipsplatting/fused.ply"
FRUIT = "splats/supersplat_fruit_drops/fruit_drops_minimal.ply"
COMPRESSED = "splats/playcanvas_compressed_test/test.compressed.ply"


def random_gaussians(n: int, degree: int, seed: int = 0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    k = (degree + 1) ** 2 - 1
    return Gaussians(
        means=torch.randn(n, 3, generator=g),
        quats=torch.randn(n, 4, generator=g),
        log_scales=torch.randn(n, 3, generator=g) - 4,
        opacity_logits=torch.randn(n, generator=g),
        sh0=torch.randn(n, 1, 3, generator=g),
        shN=torch.randn(n, k, 3, generator=g),
    )


def assert_same(a: Gaussians, b: Gaussians) -> None:
    for name, value in a.tensors().items():
        assert torch.equal(value, getattr(b, name)), name


def test_reads_real_splats(shared_data):
    donut = read_ply(shared_data / DONUT)
    assert len(donut) == 45_624 and donut.sh_degree == 0
    fruit = read_ply(shared_data / FRUIT)
    assert len(fruit) == 4_721 and fruit.sh_degree == 3
    raw = plyfile.PlyData.read(str(shared_data / FRUIT))["vertex"].data
    # channel-major f_rest: f_rest_0..14 are red, 15..29 green, 30..44 blue
    assert np.array_equal(fruit.shN[:, 0, 1].numpy(), raw["f_rest_15"])
    assert np.array_equal(fruit.shN[:, 14, 2].numpy(), raw["f_rest_44"])
    assert np.array_equal(fruit.quats[:, 0].numpy(), raw["rot_0"])
    assert np.array_equal(fruit.opacity_logits.numpy(), raw["opacity"])


def test_inspect_lists_extra_property(shared_data):
    info = inspect_ply(shared_data / FRUIT)
    assert info.extra_properties == ["transform"]
    assert info.encoding == "binary_little_endian"
    assert len(info.bounds_min) == 3 and all(lo <= hi for lo, hi in zip(info.bounds_min, info.bounds_max, strict=True))


def test_rejects_compressed_ply(shared_data):
    with pytest.raises(PlyFormatError, match="compressed PLY"):
        read_ply(shared_data / COMPRESSED)


@pytest.mark.parametrize("name", [DONUT, FRUIT])
def test_real_splat_round_trip_exact(shared_data, tmp_path, name):
    g = read_ply(shared_data / name)
    out = write_ply(tmp_path / "out.ply", g)
    assert_same(g, read_ply(out))


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_written_layout_is_exactly_inria(tmp_path, degree):
    g = random_gaussians(37, degree)
    path = write_ply(tmp_path / "g.ply", g)
    with open(path, "rb") as f:
        header = f.read(200).split(b"end_header")[0]
    assert b"format binary_little_endian 1.0" in header
    data = plyfile.PlyData.read(str(path))
    assert [e.name for e in data.elements] == ["vertex"]
    vertex = data["vertex"]
    assert [p.name for p in vertex.properties] == inria_property_names(degree)
    assert {np.dtype(p.val_dtype) for p in vertex.properties} == {np.dtype("float32")}
    assert not any(n in {"red", "green", "blue"} for n in vertex.data.dtype.names)
    assert np.array_equal(vertex.data["nx"], np.zeros(37, np.float32))
    assert_same(g, read_ply(path))


def test_rejects_corrupt_files(shared_data, tmp_path):
    good = (shared_data / FRUIT).read_bytes()
    cases = {
        "truncated.ply": good[: len(good) // 2],
        "header_only.ply": good[:300],
        "not_ply.ply": b"\x89PNG\r\n\x1a\n not a ply",
        "empty.ply": b"",
        "bad_type.ply": b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty floot x\nend_header\n",
    }
    for name, blob in cases.items():
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(PlyFormatError):
            read_ply(tmp_path / name)
    with pytest.raises(PlyFormatError, match="no such file"):
        read_ply(tmp_path / "missing.ply")


def test_rejects_point_cloud_and_nan(tmp_path):
    cloud = np.zeros(3, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1")])
    plyfile.PlyData([plyfile.PlyElement.describe(cloud, "vertex")]).write(str(tmp_path / "cloud.ply"))
    with pytest.raises(PlyFormatError, match="lacks f_dc_0"):
        read_ply(tmp_path / "cloud.ply")

    path = write_ply(tmp_path / "g.ply", random_gaussians(5, 1))
    data = plyfile.PlyData.read(str(path))
    data["vertex"].data["scale_1"][2] = np.nan
    data.write(str(tmp_path / "nan.ply"))
    with pytest.raises(PlyFormatError, match="non-finite"):
        read_ply(tmp_path / "nan.ply")


def test_refuses_to_write_nan_and_keeps_old_file(tmp_path):
    path = write_ply(tmp_path / "g.ply", random_gaussians(4, 0))
    before = path.read_bytes()
    bad = random_gaussians(4, 0)
    bad.means[1, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        write_ply(path, bad)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.ply"]


def test_export_viewer_formats(tmp_path):
    g = random_gaussians(300, 3)
    splat = export_splat(tmp_path / "g.splat", g, format="splat")
    assert splat.stat().st_size == 300 * 32  # antimatter15: 3+3 floats, 4+4 bytes per Gaussian
    compressed = export_splat(tmp_path / "g.compressed.ply", g, format="ply_compressed")
    with pytest.raises(PlyFormatError, match="compressed PLY"):
        read_ply(compressed)
    assert_same(g, read_ply(export_splat(tmp_path / "g.ply", g, format="ply")))
    with pytest.raises(ValueError, match="unknown splat format"):
        export_splat(tmp_path / "g.xyz", g, format="xyz")  # type: ignore[arg-type]
