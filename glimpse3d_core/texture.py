"""UV atlas and base-colour texture of an exported mesh, baked from renders of the Gaussians.

Recipe (:func:`bake_texture`):

0. The mesh is simplified to at most ``max_faces`` triangles (quadric decimation, fast-simplification through
   trimesh): the texture carries the detail, and charting cost grows with the face count.
1. xatlas cuts the mesh into charts and packs them into a square atlas of ``size`` texels (``padding`` texels
   between charts). Vertices on a seam are duplicated, so the textured mesh has more vertices than the input.
   It runs in a forked child process: xatlas can crash (0.0.11 segfaults on a regular 81,920-face icosphere), and
   a crash must fail this image's export with an error, not end the process that runs the other images.
2. Every texel whose centre lies inside a triangle of the atlas gets that triangle's 3D point and face normal.
3. Renders of the Gaussians (RGB, alpha, expected depth; the export stage passes the renders it makes anyway)
   colour the texels: a texel takes the colour of each view in which its point projects onto the object
   (alpha >= 0.5), faces the camera and is not hidden (the rendered depth is within ``depth_tolerance`` world units
   of the point's depth), weighted by cos²(angle between the normal and the direction to the camera) times the
   view's pixels per world unit squared at that point ((focal / depth)²: sharper views count more). Texels no
   view sees take the mesh's vertex colours (barycentric interpolation).
4. Empty texels (gutters between charts) take the colour of the nearest filled texel, so bilinear filtering and
   mipmaps do not bleed background into the charts.

UV convention: trimesh's (OpenGL): ``v`` grows upwards, texture row 0 is ``v = 1``; trimesh's glTF writer flips
``v`` to glTF's top-left origin. The texture is float32 sRGB-encoded RGB in [0, 1], like every image in the
library (glTF's baseColorTexture is sRGB too, so the colours are written unchanged).
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import traceback
from dataclasses import dataclass

import numpy as np
import torch
import trimesh
import xatlas
from scipy.ndimage import distance_transform_edt
from scipy.spatial import cKDTree

from glimpse3d_core.cameras import project_points
from glimpse3d_core.failpoints import failpoint
from glimpse3d_core.types import MeshAsset, ViewSet

COVERED_ALPHA = 0.5
"""Rendered alpha at or above which a pixel shows the object."""
UNWRAP_TIMEOUT_S = 600.0
"""Longest wait for xatlas's child process (generous: the export unwraps at most
``ExportConfig.texture_max_faces``, 8,000 by default)."""


@dataclass
class UVMesh:
    """A triangle mesh with one UV per vertex and a base-colour texture (our +Z-up world frame).

    ``vertices`` [V,3], ``faces`` [F,3] int, ``uv`` [V,2] in [0,1] (v up, see the module docstring),
    ``texture`` [S,S,3] float32 sRGB in [0,1], ``vertex_colors`` [V,3] (the source mesh's colours, carried over)."""

    vertices: np.ndarray
    faces: np.ndarray
    uv: np.ndarray
    texture: np.ndarray
    vertex_colors: np.ndarray


def uv_atlas(mesh: MeshAsset, size: int, padding: int = 2,
             chart_iterations: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """xatlas parametrisation: (source vertex index per new vertex [V'], faces [F,3], uv [V',2] in [0,1]);
    ``chart_iterations``: xatlas's chart optimisation passes (``ChartOptions.max_iterations``). xatlas runs in a
    forked child process (see the module docstring; ``os.fork`` itself, since Celery's prefork workers are
    daemonic and multiprocessing refuses children there); its crash is a RuntimeError here. Call it while no other
    thread of the process is inside a BLAS call: OpenBLAS shuts its thread pool down at a fork, and that call then
    spins for ever."""
    vertices = np.ascontiguousarray(mesh.vertices, np.float32)
    faces = np.ascontiguousarray(mesh.faces, np.uint32)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: unwrap, answer, and leave without running any of the parent's clean-up
        status = 1
        try:
            os.close(read_fd)
            failpoint("texture.unwrap")
            with os.fdopen(write_fd, "wb") as answer:
                pickle.dump(_unwrap(vertices, faces, size, padding, chart_iterations), answer)
            status = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as answer:
        answered = bool(select.select([answer], [], [], UNWRAP_TIMEOUT_S)[0])
        if not answered:
            os.kill(pid, signal.SIGKILL)
        try:
            result = pickle.load(answer) if answered else None
        except (EOFError, pickle.UnpicklingError):  # the child died before it answered in full
            result = None
    exit_code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if not answered:
        raise RuntimeError(f"xatlas did not unwrap a mesh of {len(faces)} faces within {UNWRAP_TIMEOUT_S:.0f} s")
    if result is None:
        raise RuntimeError(f"xatlas crashed (exit code {exit_code}) unwrapping a mesh of {len(faces)} faces")
    if isinstance(result, str):
        raise ValueError(result)
    return result


def _unwrap(vertices: np.ndarray, faces: np.ndarray, size: int, padding: int,
            chart_iterations: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | str:
    """:func:`uv_atlas`'s child: the atlas arrays, or the message of a mesh xatlas could not pack in one atlas."""
    atlas = xatlas.Atlas()
    atlas.add_mesh(vertices, faces)
    charts = xatlas.ChartOptions()
    charts.max_iterations = chart_iterations
    pack = xatlas.PackOptions()
    pack.resolution = size
    pack.padding = padding
    pack.bilinear = True
    atlas.generate(charts, pack)
    if atlas.atlas_count != 1:  # xatlas sizes the charts to fit one atlas; several would overlap in [0,1]²
        return f"xatlas packed the mesh into {atlas.atlas_count} atlases, expected one"
    vmapping, new_faces, uv = atlas[0]
    return vmapping.astype(np.int64), new_faces.astype(np.int64), uv.astype(np.float64)


def rasterize_uv(uv: np.ndarray, faces: np.ndarray, size: int,
                 device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Texels whose centres lie inside a UV triangle: (flat texel index [T], face [T], barycentrics [T,3]),
    sorted by texel; a texel on an edge that triangles share takes the lowest-numbered one. Computed in float64
    on ``device`` (the export's), every candidate texel of every triangle's bounding box at once.

    Texel (row, col) has its centre at ``u = (col + 0.5) / size``, ``v = 1 - (row + 0.5) / size``."""
    uv_t = torch.as_tensor(uv, dtype=torch.float64, device=device)
    faces_t = torch.as_tensor(faces, dtype=torch.int64, device=device)
    px = torch.stack([uv_t[:, 0] * size - 0.5, (1.0 - uv_t[:, 1]) * size - 0.5], 1)  # texel-centre coordinates
    tri = px[faces_t]  # [F,3,2]
    lo = tri.amin(1).ceil().clamp(0, size - 1).long()
    hi = tri.amax(1).floor().clamp(0, size - 1).long()
    w, h = (hi[:, 0] - lo[:, 0] + 1).clamp_min(0), (hi[:, 1] - lo[:, 1] + 1).clamp_min(0)
    counts = w * h
    face = torch.repeat_interleave(torch.arange(len(faces_t), device=device), counts)
    local = torch.arange(len(face), device=device) - (counts.cumsum(0) - counts)[face]
    col = lo[face, 0] + local % w[face]
    row = lo[face, 1] + local // w[face]
    a, b, c = tri[face, 0], tri[face, 1], tri[face, 2]
    v0, v1 = b - a, c - a
    p = torch.stack([col, row], 1) - a
    det = v0[:, 0] * v1[:, 1] - v0[:, 1] * v1[:, 0]
    ok = det.abs() > 1e-12
    det = torch.where(ok, det, 1.0)
    l1 = (p[:, 0] * v1[:, 1] - p[:, 1] * v1[:, 0]) / det
    l2 = (v0[:, 0] * p[:, 1] - v0[:, 1] * p[:, 0]) / det
    bary = torch.stack([1 - l1 - l2, l1, l2], 1)
    inside = ok & (bary >= -1e-6).all(1)
    texel, face, bary = row[inside] * size + col[inside], face[inside], bary[inside]
    # candidates come face by face, so after a stable sort a texel's first candidate has its lowest face
    sorted_texel, order = torch.sort(texel, stable=True)
    first = torch.ones(len(order), dtype=torch.bool, device=device)
    first[1:] = sorted_texel[1:] != sorted_texel[:-1]
    keep = order[first]
    return texel[keep].cpu().numpy(), face[keep].cpu().numpy(), bary[keep].cpu().numpy()


def fuse_colors(points: np.ndarray, normals: np.ndarray, view_sets: list[ViewSet], depth_tolerance: float,
                device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean of the rendered colours at world ``points`` [T,3] with unit ``normals`` [T,3] over every
    view of ``view_sets`` (see the module docstring), computed on ``device``: (colour [T,3], total weight [T])."""
    pts = torch.as_tensor(points, dtype=torch.float32, device=device)
    nrm = torch.as_tensor(normals, dtype=torch.float32, device=device)
    total = torch.zeros(len(pts), 3, device=device)
    weight = torch.zeros(len(pts), device=device)
    for views in view_sets:
        if views.depth is None:
            raise ValueError("texture baking needs rendered depth")
        _accumulate(pts, nrm, views, depth_tolerance, total, weight)
    return (total / weight.clamp_min(1e-8)[:, None]).cpu().numpy(), weight.cpu().numpy()


def _accumulate(pts: torch.Tensor, nrm: torch.Tensor, views: ViewSet, depth_tolerance: float,
                total: torch.Tensor, weight: torch.Tensor) -> None:
    """Add every view's weighted colour at ``pts`` into ``total`` / ``weight`` (one pass over the points per view:
    the facing test is two matrix-vector products, the masks are combined before the gathers)."""
    device = pts.device
    viewmats, Ks = (m.float() for m in views.rig.torch(device))
    rgb = torch.as_tensor(views.rgb, device=device).permute(0, 3, 1, 2)  # [V,3,H,W]
    alpha = torch.as_tensor(views.alpha, device=device).reshape(len(views), -1)
    depth = torch.as_tensor(views.depth, device=device).reshape(len(views), -1)
    h, w = views.rig.height, views.rig.width
    n_dot_p, p_sq = (nrm * pts).sum(1), (pts * pts).sum(1)
    for v in range(len(views)):
        centre = torch.as_tensor(views.rig[v].center, dtype=torch.float32, device=device)
        # cos(normal, direction to the camera) = (n.c - n.p) / |c - p|, |c - p|² = |p|² - 2 p.c + |c|²
        cos = (nrm @ centre - n_dot_p) / (p_sq - 2 * (pts @ centre) + centre @ centre).clamp_min(1e-24).sqrt()
        uv, z = project_points(pts, viewmats[v:v + 1], Ks[v:v + 1])
        uv, z = uv[0], z[0]
        col, row = uv[:, 0].floor().long(), uv[:, 1].floor().long()
        facing = (cos > 0) & (z > 0) & (col >= 0) & (col < w) & (row >= 0) & (row < h)
        idx = torch.nonzero(facing).squeeze(1)  # front-facing points inside the image (about half)
        pix = row[idx] * w + col[idx]
        seen = (alpha[v][pix] >= COVERED_ALPHA) & ((depth[v][pix] - z[idx]).abs() < depth_tolerance)
        idx = idx[seen]
        wv = cos[idx] ** 2 * (Ks[v, 0, 0] / z[idx]) ** 2
        # bilinear colour (pixel centres at integer + 0.5)
        grid = torch.stack([uv[idx, 0] / w * 2 - 1, uv[idx, 1] / h * 2 - 1], 1)[None, None]
        sampled = torch.nn.functional.grid_sample(rgb[v:v + 1], grid, align_corners=False,
                                                  padding_mode="border")[0, :, 0].T
        total.index_add_(0, idx, sampled * wv[:, None])
        weight.index_add_(0, idx, wv)


def dilate(texture: np.ndarray, filled: np.ndarray) -> np.ndarray:
    """Every texel not ``filled`` takes the colour of the nearest filled texel."""
    if not filled.any():
        return texture
    _, (rows, cols) = distance_transform_edt(~filled, return_indices=True)
    return texture[rows, cols]


def simplify(mesh: MeshAsset, max_faces: int) -> MeshAsset:
    """``mesh`` with at most ``max_faces`` triangles (quadric decimation), vertex colours from the nearest
    original vertex."""
    if len(mesh.faces) <= max_faces:
        return mesh
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False).simplify_quadric_decimation(face_count=max_faces)
    _, nearest = cKDTree(mesh.vertices).query(tm.vertices)
    return MeshAsset(np.asarray(tm.vertices), np.asarray(tm.faces), mesh.vertex_colors[nearest])


def bake_texture(mesh: MeshAsset, view_sets: list[ViewSet], size: int = 1024, padding: int = 2,
                 depth_tolerance: float = 0.03, max_faces: int = 8000, chart_iterations: int = 0,
                 device: str | torch.device = "cpu") -> UVMesh:
    """Simplify and UV-unwrap ``mesh`` (:func:`uv_atlas`) and bake a ``size``² base-colour texture from
    ``view_sets`` (renders of the Gaussians with depth; see the module docstring); the texel rasterisation and
    the colour fusion run on ``device`` (the export stage's: the Gaussians')."""
    mesh = simplify(mesh, max_faces)
    vmapping, faces, uv = uv_atlas(mesh, size, padding, chart_iterations)
    vertices = mesh.vertices[vmapping]
    vertex_colors = mesh.vertex_colors[vmapping]
    texel, face, bary = rasterize_uv(uv, faces, size, device)
    corners = vertices[faces[face]]  # [T,3,3]
    points = np.einsum("tk,tkc->tc", bary, corners)
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    colors, weight = fuse_colors(points, normals, view_sets, depth_tolerance, device)
    fallback = np.einsum("tk,tkc->tc", bary, vertex_colors[faces[face]])
    colors = np.where(weight[:, None] > 1e-6, colors, fallback)
    texture = np.zeros((size * size, 3), np.float32)
    texture[texel] = colors
    filled = np.zeros(size * size, bool)
    filled[texel] = True
    texture = dilate(texture.reshape(size, size, 3), filled.reshape(size, size))
    return UVMesh(vertices, faces, uv, np.clip(texture, 0, 1).astype(np.float32), vertex_colors)
