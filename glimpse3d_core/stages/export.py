"""Export stage: the deliverables of one image, written atomically into one folder.

Files: ``model.ply`` (INRIA 3DGS, in the frame ``up`` names: -Y up by default, as SuperSplat and INRIA viewers
show it upright; see :mod:`glimpse3d_core.orientation`), on request (``formats``) ``model.splat``
(antimatter15), ``model.spz`` (Niantic) and ``model.compressed.ply`` (SuperSplat), ``mesh.glb`` (UV-textured:
an xatlas atlas and a base-colour texture baked from renders of the Gaussians, :mod:`glimpse3d_core.texture`),
``mesh_vertexcolor.glb`` and ``mesh.obj`` (the same surface with vertex colours, OBJ +Z up), ``turntable.mp4``
(360° orbit at the input elevation, white background), ``preview.png`` (a grid of turntable frames),
``viewer.html`` (self-contained splat viewer opening at the input view; only where the viewer bundle is built:
``make viewer``, otherwise metrics.json says why it is missing; headed by the image's name and key metrics) and
``metrics.json`` (:func:`quality_metrics` plus the stage timings and counts the caller passes, the splat files'
``splat_up``, every file's size in ``file_bytes`` and the wall seconds of the export's parts in
``export_seconds``: splat_files, mesh, texture, mesh_files, turntable, metrics, viewer). The parts run one after
the other: the texture's xatlas child is forked, and a fork while another thread is inside an OpenBLAS call leaves
that call spinning for ever (OpenBLAS shuts its thread pool down at a fork), so the texture cannot bake in a thread
beside the others (it hung the export when it did; research/fork_blas_hang.py).

Mesh extraction is TSDF fusion of rendered depth inside the visual hull: the Gaussians are rendered (expected
depth D, alpha) from ``mesh_rings`` orbits of ``mesh_views_per_ring`` cameras plus a top and a bottom view. A voxel
of a cube grid around the Gaussians that projects onto background (alpha < 0.5) in any view is free space (+1).
Every other voxel takes the mean truncated signed distance ``min((D - z) / trunc, 1)`` over the views that see it
in front of the surface or less than ``trunc`` behind it, and is inside (-1) where fewer than
``mesh_min_seen_fraction`` of the views in which it projects onto the object do so (or none: voxels no view
observes lie inside, so the zero level set is closed). Without that rule a few views carved the interior into
bubbles: expected depth lies behind the first surface wherever the front splats are not opaque (6.5x the true
surface area on spot_cow; ``research/export_mesh.py``). Colour is fused from the rendered RGB within the
truncation band and sampled trilinearly at the marching-cubes vertices.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from scipy.ndimage import map_coordinates
from skimage.measure import marching_cubes

from glimpse3d_core import metrics
from glimpse3d_core.backends.clip_similarity import DEFAULT_MODEL as CLIP_DEFAULT_MODEL
from glimpse3d_core.backends.clip_similarity import clip_similarity_or_none
from glimpse3d_core.cameras import SYNCDREAMER16, OrbitSpec, intrinsics, look_at, project_points, turntable_rig
from glimpse3d_core.failpoints import failpoint
from glimpse3d_core.io.atomic import atomic_write_bytes
from glimpse3d_core.io.images import contact_sheet, save_png
from glimpse3d_core.io.mesh import export_glb, export_obj, export_textured_glb
from glimpse3d_core.io.ply import export_splat
from glimpse3d_core.io.video import VideoConfig, write_mp4
from glimpse3d_core.orientation import UpAxis, to_file_frame
from glimpse3d_core.render import render_views
from glimpse3d_core.stages.multiview import INPUT_VIEW
from glimpse3d_core.texture import bake_texture
from glimpse3d_core.timing import timed
from glimpse3d_core.types import CameraRig, Gaussians, MeshAsset, ViewSet
from glimpse3d_core.viewer.page import ViewerBundleMissing, viewer_facts, write_standalone_viewer

COVERED_ALPHA = 0.5
"""Rendered alpha at or above which a pixel counts as object (mesh fusion, silhouettes)."""
DEPTH_VARIANCE_STRIDE = 2
"""Every second pixel along each axis seeds depth-variance points (a quarter of the cost, same estimate)."""
RENDER_BATCH = 8
"""Cameras rendered per rasteriser call (bounds memory)."""
ExtraSplatFormat = Literal["splat", "spz", "ply_compressed"]
SPLAT_FILES = {"ply": "model.ply", "splat": "model.splat", "spz": "model.spz",
               "ply_compressed": "model.compressed.ply"}
"""File name of each splat format."""


class ExportConfig(BaseModel):
    """Configuration of the export stage."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mesh_resolution: int = Field(96, ge=16, le=512, description="TSDF grid cells along the longest side")
    mesh_views_per_ring: int = Field(6, ge=3, description="cameras per orbit ring for depth fusion")
    mesh_ring_elevations: tuple[float, ...] = Field((-30.0, 0.0, 30.0, 60.0), description="ring elevations (deg)")
    mesh_view_size: int = Field(128, ge=32, description="side of the fused depth renders in pixels")
    mesh_truncation: float = Field(3.0, gt=0, description="TSDF truncation in voxels")
    mesh_min_seen_fraction: float = Field(0.2, ge=0, lt=1, description="of the views in which a voxel projects "
                                          "onto the object, the fraction that must see it in front of (or on) the "
                                          "surface, else it is inside: removes the interior bubbles that expected "
                                          "depth behind semi-opaque front splats carves (research/export_mesh.py)")
    texture_size: int = Field(1024, ge=64, le=8192, description="side of mesh.glb's base-colour texture (texels)")
    texture_max_faces: int = Field(8000, ge=100, description="mesh.glb is simplified to at most this many "
                                   "triangles before UV unwrapping (the vertex-coloured meshes keep them all)")
    texture_chart_iterations: int = Field(0, ge=0, le=8, description="xatlas chart optimisation passes (its "
                                          "max_iterations; 0 against its default 1: bake CPU time 13-20% lower at "
                                          "equal textured-mesh PSNR, research/texture_bake.py)")
    texture_depth_tolerance: float = Field(0.03, gt=0, description="a texel is visible in a bake view when the "
                                           "rendered depth is within this distance (world units, extent 1)")
    up: UpAxis = Field("-y", description="up axis of the splat files: -y (INRIA/COLMAP; upright in SuperSplat and "
                                         "INRIA viewers), y (OpenGL) or z (our world frame)")
    formats: tuple[ExtraSplatFormat, ...] = Field((), description="extra splat files: splat (antimatter15), spz "
                                                  "(Niantic), ply_compressed (SuperSplat)")
    turntable_frames: int = Field(36, ge=2, description="frames of the 360° turntable video")
    turntable_size: int = Field(256, ge=32, description="side of the turntable frames in pixels")
    fps: int = Field(30, ge=1, description="turntable frame rate")
    preview_frames: int = Field(8, ge=1, description="turntable frames tiled into preview.png")
    background: float = Field(1.0, ge=0, le=1, description="grey level of video/preview backgrounds")
    viewer_html: bool = Field(True, description="write the self-contained viewer.html (needs the built viewer bundle)")
    clip_model: str = Field(CLIP_DEFAULT_MODEL, description="registry id of the CLIP model of the clip_similarity "
                                                           "metric (reported only when its weights are present)")


@dataclass
class ExportResult:
    """Paths of the written files and the metrics stored in metrics.json."""

    files: dict[str, Path] = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    mesh: MeshAsset | None = None


def render_batched(gaussians: Gaussians, rig: CameraRig) -> ViewSet:
    """:func:`render_views` of ``rig``, ``RENDER_BATCH`` cameras at a time (bounds memory)."""
    parts = [render_views(gaussians, rig.subset(np.arange(i, min(i + RENDER_BATCH, len(rig)))))
             for i in range(0, len(rig), RENDER_BATCH)]
    return ViewSet(rig, np.concatenate([p.rgb for p in parts]), np.concatenate([p.alpha for p in parts]),
                   np.concatenate([p.depth for p in parts]))


def fusion_rig(config: ExportConfig, distance: float = SYNCDREAMER16.distance) -> CameraRig:
    """Rings of cameras at ``mesh_ring_elevations`` plus a top and a bottom view, all looking at the origin."""
    size = config.mesh_view_size
    focal = SYNCDREAMER16.focal_px * size / SYNCDREAMER16.image_size
    viewmats = []
    for r, elevation in enumerate(config.mesh_ring_elevations):
        offset = r * 180.0 / config.mesh_views_per_ring  # stagger rings
        spec = OrbitSpec(config.mesh_views_per_ring, elevation, distance, focal, size, offset)
        viewmats.extend(turntable_rig(spec.num_views, spec).viewmats)
    for z in (distance, -distance):
        viewmats.append(look_at(np.array([0.0, 0.0, z])))
    K = intrinsics(focal, size, size)
    return CameraRig(np.stack(viewmats), np.repeat(K[None], len(viewmats), 0), size, size)


def write_splat_files(gaussians: Gaussians, out: Path, config: ExportConfig) -> dict[str, Path]:
    """model.ply and the requested ``formats``, all in the frame ``config.up`` names."""
    oriented = to_file_frame(gaussians, config.up)
    return {fmt: export_splat(out / SPLAT_FILES[fmt], oriented, fmt) for fmt in ("ply", *config.formats)}


def extract_mesh(gaussians: Gaussians, config: ExportConfig, rendered: ViewSet | None = None) -> MeshAsset:
    """A closed, vertex-coloured mesh of the Gaussians by TSDF fusion (see the module docstring); ``rendered``:
    their renders from :func:`fusion_rig`, when the caller has them."""
    rig = fusion_rig(config)
    rendered = rendered if rendered is not None else render_batched(gaussians, rig)
    device = gaussians.means.device
    rgb, alpha, depth = (torch.as_tensor(a, device=device) for a in (rendered.rgb, rendered.alpha, rendered.depth))
    means = gaussians.means.detach()
    lo, hi = means.quantile(0.001, 0).clamp(min=-1).cpu(), means.quantile(0.999, 0).clamp(max=1).cpu()
    voxel = float((hi - lo).max()) / (config.mesh_resolution - 1)
    pad = 3
    lo = lo - pad * voxel
    dims = [math.ceil(float(hi[i] - lo[i]) / voxel) + pad + 1 for i in range(3)]
    axes = [lo[i] + voxel * torch.arange(dims[i], dtype=torch.float32) for i in range(3)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3).to(device)
    trunc = config.mesh_truncation * voxel

    tsdf = torch.zeros(len(grid), device=device)
    weight = torch.zeros(len(grid), device=device)
    color = torch.zeros(len(grid), 3, device=device)
    color_weight = torch.zeros(len(grid), device=device)
    free = torch.zeros(len(grid), dtype=torch.bool, device=device)
    covered = torch.zeros(len(grid), device=device)
    viewmats, Ks = rig.torch(device)
    for v in range(len(rig)):
        uv, z = project_points(grid, viewmats[v:v + 1], Ks[v:v + 1])
        uv, z = uv[0], z[0]
        col, row = uv[:, 0].floor().long(), uv[:, 1].floor().long()
        inside = (z > 0) & (col >= 0) & (col < rig.width) & (row >= 0) & (row < rig.height)
        pix = row.clamp(0, rig.height - 1) * rig.width + col.clamp(0, rig.width - 1)
        a, d = alpha[v].reshape(-1)[pix], depth[v].reshape(-1)[pix]
        background = a < COVERED_ALPHA
        free |= inside & background
        seen = inside & ~background & (d > 0)
        sdf = d - z
        observed = seen & (sdf > -trunc)  # in front of the surface or within trunc behind it
        tsdf += torch.where(observed, (sdf / trunc).clamp(max=1), 0.0)
        weight += observed.float()
        covered += seen.float()
        band = seen & (sdf.abs() < trunc)
        color += rgb[v].reshape(-1, 3)[pix] * band[:, None]
        color_weight += band.float()
    interior = (weight == 0) | (weight < config.mesh_min_seen_fraction * covered)
    tsdf = torch.where(interior, -torch.ones_like(tsdf), tsdf / weight.clamp_min(1))
    tsdf = torch.where(free, torch.ones_like(tsdf), tsdf).reshape(dims)
    volume = tsdf.cpu().numpy()
    volume[[0, -1]] = volume[:, [0, -1]] = 1.0
    volume[:, :, [0, -1]] = 1.0  # the grid border is free space, so the surface closes inside the grid
    if volume.min() >= 0:
        raise ValueError("export: the Gaussians render no surface to extract a mesh from")
    verts, faces, _, _ = marching_cubes(volume, level=0.0, spacing=(voxel,) * 3, gradient_direction="descent")
    coords = (verts / voxel).T
    csum = color.reshape(*dims, 3).cpu().numpy()
    cw = color_weight.reshape(dims).cpu().numpy()
    wv = map_coordinates(cw, coords, order=1, mode="nearest")
    rgb_v = np.stack([map_coordinates(csum[..., c], coords, order=1, mode="nearest") for c in range(3)], 1)
    rgb_v = np.where(wv[:, None] > 1e-6, rgb_v / np.maximum(wv, 1e-6)[:, None], 0.5)
    return MeshAsset(verts + lo.numpy()[None], faces, np.clip(rgb_v, 0, 1))


def quality_metrics(gaussians: Gaussians, views: ViewSet, input_view: int = 0,
                    clip_model: str = CLIP_DEFAULT_MODEL, rendered: ViewSet | None = None) -> dict:
    """Input-view PSNR/SSIM (on white, SyncDreamer protocol), mean silhouette IoU over all target views, the
    depth variance of the rendered views (see :func:`glimpse3d_core.metrics.depth_variance`: how far apart the views'
    rendered depths put one surface point, mean variance over points seen by >= 2 views, in extent² units; it
    measures the splat's self-consistency, not its accuracy) and, only when the
    ``clip_model`` weights are present, ``clip_similarity``: mean CLIP cosine similarity of the photo to the
    renders of every other target view (all on white). ``rendered``: the Gaussians rendered by ``views.rig``, when
    the caller has them."""
    rendered = rendered if rendered is not None else render_batched(gaussians, views.rig)
    rgb, alpha = rendered.composite(1.0), rendered.alpha
    target = views.composite(1.0)
    clip = clip_similarity_or_none(target[input_view], np.delete(rgb, input_view, axis=0), clip_model,
                                   device=gaussians.means.device)  # the run's device: the chain put the Gaussians there
    return {
        **({} if clip is None else {"clip_similarity": clip}),
        "input_psnr": float(metrics.psnr(rgb[input_view], target[input_view])),
        "input_ssim": float(metrics.ssim(rgb[input_view], target[input_view])),
        "silhouette_iou": float(np.mean([metrics.silhouette_iou(alpha[v], views.alpha[v])
                                         for v in range(len(views))])),
        "depth_variance": metrics.depth_variance(rendered, stride=DEPTH_VARIANCE_STRIDE).value,
        "num_gaussians": len(gaussians),
    }


def run(gaussians: Gaussians, views: ViewSet, out_dir: str | Path, config: ExportConfig,
        extra_metrics: dict | None = None) -> ExportResult:
    """Write the deliverables of ``gaussians`` into ``out_dir``; ``extra_metrics`` (timings, counts, backends)
    are merged into metrics.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    extra_metrics = extra_metrics or {}
    result = ExportResult()
    seconds: dict[str, float] = {}
    with timed(seconds, "splat_files"):
        result.files.update(write_splat_files(gaussians, out, config))
    with timed(seconds, "mesh"):
        fused = render_batched(gaussians, fusion_rig(config))
        result.mesh = extract_mesh(gaussians, config, fused)
    with timed(seconds, "texture"):
        target_renders = render_batched(gaussians, views.rig)
        textured = bake_texture(result.mesh, [fused, target_renders], config.texture_size,
                                depth_tolerance=config.texture_depth_tolerance, max_faces=config.texture_max_faces,
                                chart_iterations=config.texture_chart_iterations, device=gaussians.means.device)
        result.files["glb"] = export_textured_glb(out / "mesh.glb", textured)
    with timed(seconds, "mesh_files"):
        result.files["glb_vertexcolor"] = export_glb(out / "mesh_vertexcolor.glb", result.mesh)
        result.files["obj"] = export_obj(out / "mesh.obj", result.mesh)
    failpoint("export.midway")

    with timed(seconds, "turntable"):
        table = turntable_rig(config.turntable_frames, image_size=config.turntable_size)
        frames = render_batched(gaussians, table).composite(config.background)
        result.files["mp4"] = write_mp4(out / "turntable.mp4", frames, VideoConfig(fps=config.fps))
        pick = np.linspace(0, len(frames), config.preview_frames, endpoint=False).astype(int)
        sheet = contact_sheet(frames[pick], columns=min(4, len(pick)), background=config.background)
        result.files["preview"] = save_png(out / "preview.png", sheet)

    with timed(seconds, "metrics"):
        quality = quality_metrics(gaussians, views, clip_model=config.clip_model, rendered=target_renders)
    viewer_note = {}
    if config.viewer_html:
        title = str(extra_metrics.get("image") or out.name)
        facts = viewer_facts({**quality, **extra_metrics})
        try:
            with timed(seconds, "viewer"):
                result.files["viewer"] = write_standalone_viewer(out / "viewer.html", gaussians.detach().to("cpu"),
                                                                 views.rig[INPUT_VIEW], title=title, facts=facts)
        except (ViewerBundleMissing, RuntimeError) as exc:  # no bundle built, or no gsplat for the .splat export
            viewer_note = {"viewer_html_skipped": str(exc)}

    result.metrics = {**quality, **viewer_note,
                      "mesh_vertices": len(result.mesh.vertices), "mesh_faces": len(result.mesh.faces),
                      "mesh_textured_faces": len(textured.faces), "mesh_texture_size": config.texture_size,
                      "export_seconds": seconds,
                      "splat_up": config.up,
                      "file_bytes": {key: path.stat().st_size for key, path in result.files.items()},
                      **extra_metrics}
    text = json.dumps(metrics.json_safe(result.metrics), indent=2, sort_keys=True, default=float)
    result.files["metrics"] = atomic_write_bytes(out / "metrics.json", text.encode())
    return result
