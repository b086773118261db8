"""Refine stage (MVCRM, multi-view consistency refinement) of fitted Gaussians against the target views.

Three independent parts, each switchable so ablations can measure it; :class:`RefineResult` counts what each did.

(a) **Depth consistency.** For every view, the rendered expected depth ``D_r`` is compared with the depth backend's
    estimate ``D_e`` for that view's image (relative depth) after the least-squares fit ``s * D_e + t ~ D_r`` over
    the pixels both cover (one refit without the worst ``fit_trim`` fraction of residuals, so that the floaters
    being looked for do not bend the fit). Only views whose fit has a positive scale and an R² of at least
    ``min_fit_r2`` judge depth (a weight-free estimate such as silhouette inflation often cannot explain a
    view's depth, and a bad fit would condemn good Gaussians); silhouettes judge in every view. A Gaussian
    centre projecting into a view *disagrees* there when it lands
    on the view's background (target alpha < ``alpha_threshold``) or when it is not hidden behind the rendered
    front surface (``z - D_r < visible_tolerance + visible_scale_factor * largest sigma``: expected depth is pulled
    towards the viewer by overlapping neighbours) but ``|z - (s D_e + t)| > depth_tolerance``. Gaussians that
    disagree in at least ``disagree_fraction`` of the views that judge them are dropped (``mode='drop'``), or, where the
    disagreement is one of depth, moved along each disagreeing view's ray to the fitted depth (averaged over those
    views; ``mode='pull'``; background disagreement still drops). Distances are in world units (extent 1).
(b) **kNN normal smoothing.** A Gaussian's normal is its shortest axis. For flat Gaussians (shortest/middle scale
    < ``flat_ratio``) the normal is replaced by the opacity-weighted mean of its ``knn`` nearest flat neighbours'
    normals (sign-aligned), and the Gaussian is rotated by the smallest rotation taking the old to the new normal.
(c) **Visibility-weighted colour fusion.** Each Gaussian seen on the front surface of a view (as in (a)) inside the
    view's silhouette gets that view's target colour at its centre's pixel, weighted by the view weight times
    ``|cos|`` of the angle between its normal and the viewing ray; the DC colour moves ``color_blend`` of the way
    to the weighted mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from scipy.spatial import cKDTree

from glimpse3d_core.cameras import project_points
from glimpse3d_core.render import rasterize
from glimpse3d_core.render.torch_backend import quat_to_rotmat
from glimpse3d_core.types import DepthMap, Gaussians, ViewSet, rgb_to_sh0, sh0_to_rgb


class RefineConfig(BaseModel):
    """Configuration of the MVCRM refine stage."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    depth_consistency: bool = Field(True, description="(a) drop/pull Gaussians that disagree with the views")
    mode: Literal["drop", "pull"] = Field("drop", description="(a) what to do with depth-disagreeing Gaussians")
    alpha_threshold: float = Field(0.1, ge=0, le=1, description="(a) target alpha below this is background")
    visible_tolerance: float = Field(0.02, gt=0, description="(a,c) z - rendered depth below this (+ size term) "
                                     "is 'on the front surface'")
    visible_scale_factor: float = Field(3.0, ge=0, description="(a,c) largest Gaussian sigmas added to that "
                                        "tolerance (expected depth is pulled forward by overlapping neighbours)")
    depth_tolerance: float = Field(0.1, gt=0, description="(a) |z - fitted estimate| beyond which depth disagrees")
    disagree_fraction: float = Field(0.5, gt=0, le=1, description="(a) act when this share of judging views "
                                     "disagree")
    fit_trim: float = Field(0.2, ge=0, lt=1, description="(a) share of worst residuals left out of the refit")
    min_fit_r2: float = Field(0.9, ge=0, le=1, description="(a) a view's estimate judges depth only when its fit "
                              "explains this share of the rendered depth's variance (and its scale is positive)")
    normal_smoothing: bool = Field(True, description="(b) kNN normal smoothing of flat Gaussians")
    knn: int = Field(8, ge=1, description="(b) neighbours averaged")
    flat_ratio: float = Field(0.5, gt=0, le=1, description="(b) shortest/middle scale below which a Gaussian "
                              "is flat")
    color_fusion: bool = Field(True, description="(c) visibility-weighted colour fusion across views")
    color_blend: float = Field(0.5, ge=0, le=1, description="(c) how far the DC colour moves to the fused one")


@dataclass
class RefineResult:
    """The refined Gaussians and what each part changed."""

    gaussians: Gaussians
    counts: dict[str, int] = field(default_factory=dict)
    """dropped_background, dropped_depth, pulled, normals_smoothed, colors_fused, num_before, num_after."""
    depth_fits: list[tuple[float, float, float]] = field(default_factory=list)
    """(scale, shift, R²) of the least-squares depth fit per view (NaN where a view had too few pixels)."""


def quat_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product a*b of wxyz quaternions [N,4]."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], -1)


def gaussian_normals(g: Gaussians) -> torch.Tensor:
    """Unit normals [N,3]: the world direction of each Gaussian's shortest axis."""
    R = quat_to_rotmat(g.quats)
    axis = g.log_scales.argmin(-1)
    return R.gather(2, axis[:, None, None].expand(-1, 3, 1))[..., 0]


def rotation_between(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Smallest rotations (wxyz [N,4]) taking unit vectors ``a`` to unit vectors ``b`` (not antiparallel)."""
    q = torch.cat([1 + (a * b).sum(-1, keepdim=True), torch.cross(a, b, dim=-1)], -1)
    return torch.nn.functional.normalize(q, dim=-1)


def fit_scale_shift(estimate: np.ndarray, target: np.ndarray, trim: float) -> tuple[float, float, float]:
    """Least-squares (s, t) with ``s * estimate + t ~ target``, refitted once without the worst ``trim`` share, and
    the refit's R² (share of the target's variance it explains; NaN everywhere with fewer than 3 pixels)."""
    if estimate.size < 3:
        return float("nan"), float("nan"), float("nan")
    A = np.stack([estimate, np.ones_like(estimate)], 1).astype(np.float64)
    keep = np.ones(len(A), dtype=bool)
    s, t = np.linalg.lstsq(A, target, rcond=None)[0]
    if trim > 0:
        residual = np.abs(A @ np.array([s, t]) - target)
        keep = residual <= np.quantile(residual, 1 - trim)
        if keep.sum() >= 3:
            s, t = np.linalg.lstsq(A[keep], target[keep], rcond=None)[0]
    fitted, kept = A[keep] @ np.array([s, t]), target[keep]
    total = float(((kept - kept.mean()) ** 2).sum())
    r2 = 1.0 - float(((kept - fitted) ** 2).sum()) / total if total > 0 else 0.0
    return float(s), float(t), r2


def _sample(image: torch.Tensor, uv: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """Nearest-pixel values of ``image`` [C,H,W(,k)] at ``uv`` [C,N,2] (zeros where not ``inside``)."""
    C, H, W = image.shape[:3]
    col = uv[..., 0].floor().long().clamp(0, W - 1)
    row = uv[..., 1].floor().long().clamp(0, H - 1)
    flat = image.reshape(C, H * W, *image.shape[3:])
    idx = (row * W + col)
    out = torch.stack([flat[c][idx[c]] for c in range(C)])
    mask = inside if out.ndim == 2 else inside[..., None]
    return torch.where(mask, out, torch.zeros_like(out))


def _on_front_surface(g: Gaussians, z: torch.Tensor, surface_z: torch.Tensor, config: RefineConfig) -> torch.Tensor:
    """[C,N] whether each centre is not hidden behind the rendered surface: ``z - D_r`` below the tolerance plus
    ``visible_scale_factor`` of the Gaussian's largest sigma (in front of the surface counts as visible)."""
    slack = config.visible_tolerance + config.visible_scale_factor * g.log_scales.max(-1).values.exp()
    return (surface_z > 0) & (z - surface_z < slack[None])


def _depth_consistency(g: Gaussians, views: ViewSet, estimates: list[DepthMap], rendered_depth: torch.Tensor,
                       config: RefineConfig, result: RefineResult) -> Gaussians:
    viewmats, Ks = views.rig.torch(g.means.device)
    uv, z = project_points(g.means, viewmats, Ks)
    W, H = views.rig.width, views.rig.height
    inside = (z > 0) & (uv[..., 0] >= 0) & (uv[..., 0] < W) & (uv[..., 1] >= 0) & (uv[..., 1] < H)
    target_alpha = torch.as_tensor(views.alpha, device=z.device)
    fitted = torch.zeros_like(rendered_depth)
    for v, est in enumerate(estimates):
        if est.depth.shape != (H, W):
            raise ValueError(f"refine: depth estimate {v} is {est.depth.shape}, the views are {(H, W)}")
        rd = rendered_depth[v].cpu().numpy()
        both = est.valid & (rd > 0) & (views.alpha[v] >= config.alpha_threshold)
        s, t, r2 = fit_scale_shift(est.depth[both].astype(np.float64), rd[both].astype(np.float64), config.fit_trim)
        result.depth_fits.append((s, t, r2))
        if np.isfinite(s) and s > 0 and r2 >= config.min_fit_r2:
            result.counts["depth_views_used"] += 1
            fitted[v] = torch.as_tensor(np.where(est.valid, s * est.depth + t, 0.0), dtype=fitted.dtype)
    background = inside & (_sample(target_alpha, uv, inside) < config.alpha_threshold)
    surface_z, estimate_z = _sample(rendered_depth, uv, inside), _sample(fitted, uv, inside)
    visible = inside & ~background & _on_front_surface(g, z, surface_z, config) & (estimate_z > 0)
    far = visible & ((z - estimate_z).abs() > config.depth_tolerance)
    judged = (background | visible).sum(0)
    bad_bg, bad_depth = background.sum(0), far.sum(0)
    act = (judged > 0) & ((bad_bg + bad_depth) >= config.disagree_fraction * judged)
    drop_bg = act & (bad_bg >= bad_depth)
    depth_act = act & ~drop_bg
    result.counts["dropped_background"] = int(drop_bg.sum())
    if config.mode == "pull":
        centers = torch.linalg.inv(viewmats)[:, :3, 3]
        ratio = torch.where(far, estimate_z / z.clamp_min(1e-8), torch.ones_like(z))
        moved = centers[:, None] + (g.means[None] - centers[:, None]) * ratio[..., None]
        pulled = (moved * far[..., None]).sum(0) / far.sum(0).clamp_min(1)[:, None]
        means = torch.where(depth_act[:, None], pulled, g.means)
        result.counts["pulled"] = int(depth_act.sum())
        result.counts["dropped_depth"] = 0
        return replace(g.select(~drop_bg), means=means[~drop_bg])
    result.counts["dropped_depth"] = int(depth_act.sum())
    result.counts["pulled"] = 0
    return g.select(~act)


def _smooth_normals(g: Gaussians, config: RefineConfig, result: RefineResult) -> Gaussians:
    s = g.log_scales.sort(-1).values
    flat = (s[:, 0] - s[:, 1]) < np.log(config.flat_ratio)
    idx = torch.nonzero(flat)[:, 0]
    if len(idx) <= config.knn:
        result.counts["normals_smoothed"] = 0
        return g
    normals = gaussian_normals(g)[idx]
    pts = g.means[idx].cpu().numpy()
    _, nbr = cKDTree(pts).query(pts, k=config.knn + 1)
    nbr = torch.as_tensor(nbr, device=g.means.device)
    nn = normals[nbr]  # [M,k+1,3], self included
    sign = torch.sign((nn * normals[:, None]).sum(-1, keepdim=True))
    w = g.opacities[idx][nbr][..., None]
    smooth = torch.nn.functional.normalize((nn * sign.where(sign != 0, torch.ones_like(sign)) * w).sum(1), dim=-1)
    ok = (normals * smooth).sum(-1) > -0.999
    rot = rotation_between(normals[ok], smooth[ok])
    quats = g.quats.clone()
    quats[idx[ok]] = quat_multiply(rot, torch.nn.functional.normalize(g.quats[idx[ok]], dim=-1))
    result.counts["normals_smoothed"] = int(ok.sum())
    return replace(g, quats=quats)


def _fuse_colors(g: Gaussians, views: ViewSet, rendered_depth: torch.Tensor, config: RefineConfig,
                 result: RefineResult) -> Gaussians:
    device = g.means.device
    viewmats, Ks = views.rig.torch(device)
    uv, z = project_points(g.means, viewmats, Ks)
    W, H = views.rig.width, views.rig.height
    inside = (z > 0) & (uv[..., 0] >= 0) & (uv[..., 0] < W) & (uv[..., 1] >= 0) & (uv[..., 1] < H)
    alpha = _sample(torch.as_tensor(views.alpha, device=device), uv, inside)
    visible = inside & (alpha >= 0.5) & _on_front_surface(g, z, _sample(rendered_depth, uv, inside), config)
    colors = _sample(torch.as_tensor(views.rgb, device=device), uv, inside)  # [C,N,3]
    centers = torch.linalg.inv(viewmats)[:, :3, 3]
    rays = torch.nn.functional.normalize(g.means[None] - centers[:, None], dim=-1)
    cos = (rays * gaussian_normals(g)[None]).sum(-1).abs()
    weights = torch.as_tensor(views.weights, device=device)[:, None] * cos * visible
    total = weights.sum(0)
    fused = (colors * weights[..., None]).sum(0) / total.clamp_min(1e-8)[:, None]
    has = total > 0
    rgb = sh0_to_rgb(g.sh0[:, 0])
    new = torch.where(has[:, None], rgb + config.color_blend * (fused - rgb), rgb)
    result.counts["colors_fused"] = int(has.sum())
    return replace(g, sh0=rgb_to_sh0(new)[:, None])


def _render_depth(g: Gaussians, views: ViewSet) -> torch.Tensor:
    viewmats, Ks = views.rig.torch(g.means.device)
    return rasterize(g, viewmats, Ks, views.rig.width, views.rig.height).depth


@torch.no_grad()
def run(gaussians: Gaussians, views: ViewSet, depth_estimates: list[DepthMap] | None,
        config: RefineConfig) -> RefineResult:
    """Refine ``gaussians`` against ``views`` (their rig and silhouettes) and per-view ``depth_estimates``
    (the depth backend run on each view's image; required when ``config.depth_consistency``)."""
    g = gaussians.detach()
    result = RefineResult(g, counts={"num_before": len(g), "dropped_background": 0, "dropped_depth": 0,
                                     "pulled": 0, "normals_smoothed": 0, "colors_fused": 0, "depth_views_used": 0})
    if config.depth_consistency:
        if depth_estimates is None or len(depth_estimates) != len(views):
            raise ValueError("refine: depth consistency needs one depth estimate per view")
        g = _depth_consistency(g, views, depth_estimates, _render_depth(g, views), config, result)
    if config.normal_smoothing:
        g = _smooth_normals(g, config, result)
    if config.color_fusion and len(g):
        g = _fuse_colors(g, views, _render_depth(g, views), config, result)
    result.gaussians = g
    result.counts["num_after"] = len(g)
    return result
