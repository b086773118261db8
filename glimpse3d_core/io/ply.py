"""INRIA 3D Gaussian Splatting PLY files (the layout of graphdeco-inria/gaussian-splatting, read by SuperSplat,
gsplat.js, antimatter15's viewer and most tools).

Layout written: binary little-endian, one ``vertex`` element, float32 properties in exactly this order::

    x y z nx ny nz f_dc_0 f_dc_1 f_dc_2 f_rest_0 .. f_rest_{3K-1} opacity scale_0 scale_1 scale_2 rot_0 .. rot_3

with K = (degree+1)^2 - 1 higher-order SH coefficients per channel, stored **channel-major** (all K red
coefficients, then green, then blue) — our ``shN`` [N,K,3] is point-major, so f_rest = shN.transpose(1,2).
``opacity`` is the logit, ``scale_*`` the log-scales, ``rot_*`` the quaternion w, x, y, z (not necessarily
normalised), normals are zeros (INRIA writes zeros; viewers ignore them).

Reading is lenient where it is safe: normals and f_rest may be absent (SH degree 0), extra per-vertex
properties are ignored (and listed by :func:`inspect_ply`), float64 columns are accepted. It is strict where a
silent misread would follow: missing or non-float Gaussian properties, a gap in f_rest, SH degree above 3,
NaN/inf values, and quantised formats (PlayCanvas/SuperSplat ``.compressed.ply``) raise :class:`PlyFormatError`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import plyfile
import torch

from glimpse3d_core.io.atomic import atomic_write, atomic_write_bytes
from glimpse3d_core.io.spz import write_spz
from glimpse3d_core.types import Gaussians

POSITION = ("x", "y", "z")
NORMAL = ("nx", "ny", "nz")
F_DC = ("f_dc_0", "f_dc_1", "f_dc_2")
OPACITY = "opacity"
SCALE = ("scale_0", "scale_1", "scale_2")
ROT = ("rot_0", "rot_1", "rot_2", "rot_3")
REQUIRED = (*POSITION, *F_DC, OPACITY, *SCALE, *ROT)
SH_REST_COUNTS = {0: 0, 9: 1, 24: 2, 45: 3}
"""Number of f_rest properties -> SH degree."""
COMPRESSED_MARKERS = ("chunk", "packed_position", "packed_rotation", "packed_scale", "packed_color")
"""Element or property names of the PlayCanvas/SuperSplat compressed PLY."""
BYTE_ORDER_NAMES = {"<": "binary_little_endian", ">": "binary_big_endian"}
SplatFormat = Literal["ply", "splat", "spz", "ply_compressed"]


class PlyFormatError(ValueError):
    """The file is not a readable INRIA 3DGS PLY (the message says what is wrong)."""


def inria_property_names(sh_degree: int) -> list[str]:
    """The exact INRIA property list for an SH degree 0..3."""
    if sh_degree not in (0, 1, 2, 3):
        raise ValueError(f"SH degree must be 0..3, got {sh_degree}")
    num_rest = 3 * ((sh_degree + 1) ** 2 - 1)
    return [*POSITION, *NORMAL, *F_DC, *(f"f_rest_{i}" for i in range(num_rest)), OPACITY, *SCALE, *ROT]


@dataclass
class PlyInfo:
    """What :func:`inspect_ply` found: counts, SH degree, bounds of the means and the header's properties."""

    path: Path
    num_gaussians: int
    sh_degree: int
    encoding: str
    properties: list[tuple[str, str]]
    extra_properties: list[str] = field(default_factory=list)
    bounds_min: list[float] = field(default_factory=list)
    bounds_max: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "path": str(self.path),
            "num_gaussians": self.num_gaussians,
            "sh_degree": self.sh_degree,
            "encoding": self.encoding,
            "bounds_min": self.bounds_min,
            "bounds_max": self.bounds_max,
            "properties": [name for name, _ in self.properties],
            "extra_properties": self.extra_properties,
        }


def _read_plydata(path: Path) -> plyfile.PlyData:
    if not path.is_file():
        raise PlyFormatError(f"{path}: no such file")
    with open(path, "rb") as f:
        if f.read(4) not in (b"ply\n", b"ply\r"):
            raise PlyFormatError(f"{path}: not a PLY file (it does not start with 'ply')")
        f.seek(0)
        try:  # memory-mapped: plyfile's non-mmap reader is ~1000x slower; columns are copied out below
            return plyfile.PlyData.read(f, mmap=True)
        except (plyfile.PlyParseError, ValueError, EOFError, MemoryError) as exc:
            raise PlyFormatError(f"{path}: corrupt or truncated PLY: {exc}") from exc


def _check_layout(path: Path, data: plyfile.PlyData) -> tuple[plyfile.PlyElement, int]:
    """The vertex element and the SH degree, after checking the INRIA layout."""
    names = {el.name for el in data.elements}
    props = {p.name for el in data.elements for p in el.properties}
    if any(m in names or m in props for m in COMPRESSED_MARKERS):
        raise PlyFormatError(
            f"{path}: this is a PlayCanvas/SuperSplat compressed PLY (quantised 'chunk'/'packed_*' data), not the "
            "INRIA 3DGS layout; open it in SuperSplat and export an uncompressed .ply"
        )
    if "vertex" not in names:
        raise PlyFormatError(f"{path}: no 'vertex' element (elements: {sorted(names)})")
    vertex = data["vertex"]
    columns = {p.name: p for p in vertex.properties}
    missing = [n for n in REQUIRED if n not in columns]
    if missing:
        raise PlyFormatError(
            f"{path}: not a Gaussian splat PLY, the vertex element lacks {', '.join(missing)} "
            f"(it has {', '.join(columns)})"
        )
    rest = sorted((n for n in columns if n.startswith("f_rest_")), key=lambda n: int(n[7:]) if n[7:].isdigit() else -1)
    if rest != [f"f_rest_{i}" for i in range(len(rest))]:
        raise PlyFormatError(f"{path}: f_rest properties are not f_rest_0..f_rest_{len(rest) - 1}: {rest}")
    if len(rest) not in SH_REST_COUNTS:
        raise PlyFormatError(
            f"{path}: {len(rest)} f_rest properties; expected 0, 9, 24 or 45 (SH degree 0..3)"
        )
    gaussian_props = [*REQUIRED, *rest]
    non_float = [n for n in gaussian_props if np.dtype(columns[n].val_dtype).kind != "f"]
    if non_float:
        raise PlyFormatError(f"{path}: properties {non_float} are not float (quantised data is not INRIA layout)")
    if vertex.count == 0:
        raise PlyFormatError(f"{path}: the file holds no Gaussians")
    return vertex, SH_REST_COUNTS[len(rest)]


def _column(vertex: plyfile.PlyElement, names: tuple[str, ...] | list[str]) -> np.ndarray:
    return np.stack([np.array(vertex.data[n], dtype=np.float32) for n in names], axis=1)


def _gaussians_from_vertex(path: Path, vertex: plyfile.PlyElement, sh_degree: int) -> Gaussians:
    n = vertex.count
    num_k = (sh_degree + 1) ** 2 - 1
    rest_names = [f"f_rest_{i}" for i in range(3 * num_k)]
    arrays = {
        "means": _column(vertex, POSITION),
        "quats": _column(vertex, ROT),
        "log_scales": _column(vertex, SCALE),
        "opacity_logits": np.array(vertex.data[OPACITY], dtype=np.float32),
        "sh0": _column(vertex, F_DC).reshape(n, 1, 3),
        "shN": (_column(vertex, rest_names) if num_k else np.zeros((n, 0), np.float32))
        .reshape(n, 3, num_k)
        .transpose(0, 2, 1),
    }
    bad = {k: int((~np.isfinite(v)).reshape(n, -1).any(axis=1).sum()) for k, v in arrays.items()}
    bad = {k: v for k, v in bad.items() if v}
    if bad:
        raise PlyFormatError(f"{path}: non-finite (NaN/inf) values in {bad} Gaussians")
    return Gaussians(**{k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()})


def read_ply(path: str | os.PathLike[str]) -> Gaussians:
    """Read an INRIA 3DGS PLY into float32 CPU :class:`Gaussians`; :class:`PlyFormatError` if it is not one."""
    path = Path(path)
    vertex, degree = _check_layout(path, _read_plydata(path))
    return _gaussians_from_vertex(path, vertex, degree)


def inspect_ply(path: str | os.PathLike[str]) -> PlyInfo:
    """Validate a splat PLY fully (as :func:`read_ply`) and describe it."""
    path = Path(path)
    data = _read_plydata(path)
    vertex, degree = _check_layout(path, data)
    gaussians = _gaussians_from_vertex(path, vertex, degree)
    known = set(inria_property_names(degree))
    return PlyInfo(
        path=path,
        num_gaussians=len(gaussians),
        sh_degree=degree,
        encoding="ascii" if data.text else BYTE_ORDER_NAMES.get(data.byte_order, data.byte_order),
        properties=[(p.name, str(np.dtype(p.val_dtype))) for p in vertex.properties],
        extra_properties=[p.name for p in vertex.properties if p.name not in known],
        bounds_min=gaussians.means.min(0).values.tolist(),
        bounds_max=gaussians.means.max(0).values.tolist(),
    )


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).numpy()


def _check_finite(gaussians: Gaussians) -> None:
    if len(gaussians) == 0:
        raise ValueError("refusing to write a splat with no Gaussians")
    if not gaussians.is_finite():
        bad = [k for k, v in gaussians.tensors().items() if not bool(torch.isfinite(v).all())]
        raise ValueError(f"refusing to write non-finite (NaN/inf) Gaussian values in {bad}")


def write_ply(path: str | os.PathLike[str], gaussians: Gaussians) -> Path:
    """Write ``gaussians`` as an INRIA 3DGS PLY (binary little-endian float32, exact property order), atomically.

    Float32 input round-trips exactly through :func:`read_ply`. Raises ValueError on NaN/inf or an empty set.
    """
    _check_finite(gaussians)
    n, degree = len(gaussians), gaussians.sh_degree
    names = inria_property_names(degree)
    columns = np.concatenate(
        [
            _numpy(gaussians.means),
            np.zeros((n, 3), np.float32),
            _numpy(gaussians.sh0).reshape(n, 3),
            _numpy(gaussians.shN).transpose(0, 2, 1).reshape(n, -1),
            _numpy(gaussians.opacity_logits).reshape(n, 1),
            _numpy(gaussians.log_scales),
            _numpy(gaussians.quats),
        ],
        axis=1,
    )
    table = np.empty(n, dtype=[(name, "<f4") for name in names])
    for i, name in enumerate(names):
        table[name] = columns[:, i]
    ply = plyfile.PlyData([plyfile.PlyElement.describe(table, "vertex")], text=False, byte_order="<")
    with atomic_write(path) as tmp:
        ply.write(str(tmp))
    return Path(path)


def export_splat(path: str | os.PathLike[str], gaussians: Gaussians, format: SplatFormat = "ply") -> Path:
    """Write ``gaussians`` for a viewer, atomically.

    * ``ply``: the INRIA layout (:func:`write_ply`), lossless.
    * ``splat``: antimatter15's 32-byte-per-Gaussian format (SH degree 0, 8-bit colour/rotation), written by
      ``gsplat.exporter.export_splats``; sorted by Morton code.
    * ``ply_compressed``: SuperSplat/PlayCanvas chunked quantised PLY, written by ``gsplat.exporter``; drops
      Gaussians with opacity below 1/255. :func:`read_ply` does not read it back.
    * ``spz``: Niantic's gzipped, quantised format (:mod:`glimpse3d_core.io.spz`; keeps SH, stores the frame
      flipped to SPZ's RUB as the reference library does).
    """
    if format == "ply":
        return write_ply(path, gaussians)
    if format == "spz":
        _check_finite(gaussians)
        return write_spz(path, gaussians)
    if format not in ("splat", "ply_compressed"):
        raise ValueError(f"unknown splat format {format!r}; choose ply, splat, spz or ply_compressed")
    _check_finite(gaussians)
    try:
        from gsplat.exporter import export_splats
    except ImportError as exc:
        raise RuntimeError(f"format {format!r} needs gsplat (pip install 'glimpse3d[gpu]'): {exc}") from exc
    g = gaussians.detach().to("cpu")
    data = export_splats(
        means=g.means.float(),
        scales=g.log_scales.float(),
        quats=g.quats.float(),
        opacities=g.opacity_logits.float(),
        sh0=g.sh0.float(),
        shN=g.shN.float(),
        format=format,
    )
    return atomic_write_bytes(path, data)
