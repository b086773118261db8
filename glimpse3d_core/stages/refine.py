"""Refine stage (MVCRM, multi-view consistency refinement) of fitted Gaussians against the target views.

Three independent parts, each switchable so ablations can measure it; :class:`RefineResult` counts what each did.
The parts edit the Gaussians directly, which on its own undoes part of the fit (measured on the chair: input view
43.6 -> 34.0 dB), so they are followed by a short **re-fit** (``refit_iterations`` steps of the optimize stage's
loss, means at the learning rate optimisation ended with, no densification) and a **gate**: the refined Gaussians
replace the optimised ones only when neither the input view's PSNR nor the (weighted) mean PSNR of the other target
views, both rendered on white against the targets, drops by more than ``gate_tolerance_db``; otherwise the
optimised Gaussians pass through unchanged (``counts['accepted'] = 0``). Refine therefore never makes the fit to
the target views worse; whether it helps novel views is what ``glimpse3d bench`` measures.

(a) **Depth consistency.** For every view, the rendered expected depth ``D_r`` is compared with the depth backend's
    estimate ``D_e`` for that view's image (relative depth) after the least-squares fit
    ``s * D_e + t (+ a x + b y) ~ D_r`` over the pixels both cover (:func:`glimpse3d_core.metrics.fit_depth`: one
    refit without the worst ``fit_trim`` fraction of residuals, so that the floaters being looked for do not bend
    the fit; ``fit_tilt`` adds the image-plane gradient a relative estimate cannot know, without which silhouette
    inflation explained 0-60 % of a 30°-elevation view's depth and no view passed the gate). Only views whose fit
    has a positive scale and an R² of at least ``min_fit_r2`` judge depth (a bad fit would condemn good
    Gaussians); silhouettes judge in every view. A Gaussian
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
from glimpse3d_core.metrics import DepthFit, psnr, view_depth_fits
from glimpse3d_core.render import rasterize, render_views
from glimpse3d_core.render.torch_backend import quat_to_rotmat
from glimpse3d_core.stages import optimize
from glimpse3d_core.stages.multiview import INPUT_VIEW
from glimpse3d_core.stages.optimize import OptimizeConfig
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
    fit_tilt: bool = Field(True, description="(a) fit an image-plane depth gradient besides scale and shift")
    min_fit_r2: float = Field(0.7, ge=0, le=1, description="(a) a view's estimate judges depth only when its fit "
                              "explains this share of the rendered depth's variance (and its scale is positive)")
    normal_smoothing: bool = Field(True, description="(b) kNN normal smoothing of flat Gaussians")
    knn: int = Field(8, ge=1, description="(b) neighbours averaged")
    flat_ratio: float = Field(0.5, gt=0, le=1, description="(b) shortest/middle scale below which a Gaussian "
                              "is flat")
    color_fusion: bool = Field(True, description="(c) visibility-weighted colour fusion across views")
    color_blend: float = Field(0.5, ge=0, le=1, description="(c) how far the DC colour moves to the fused one")
    refit_iterations: int = Field(50, ge=0, description="steps of the short re-fit after the parts (0: none)")
    gate: bool = Field(True, description="keep the optimised Gaussians when refining lowers the fit to the views")
    gate_tolerance_db: float = Field(0.05, ge=0, description="PSNR drop (input view, or mean of the other views) "
                                     "beyond which the gate rejects the refinement")


@dataclass
class RefineResult:
    """The refined Gaussians and what each part changed."""

    gaussians: Gaussians
    counts: dict[str, int] = field(default_factory=dict)
    """dropped_background, dropped_depth, pulled, normals_smoothed, colors_fused, depth_views_used (views whose
    depth fit passed the gate), accepted (1: the refined Gaussians passed the gate), num_before, num_after."""
    depth_fits: list[DepthFit] = field(default_factory=list)
    """Depth consistency's fit per view, of the optimised Gaussians (NaN where a view had too few pixels)."""
    scores: dict[str, float] = field(default_factory=dict)
    """input_psnr_before/after and views_psnr_before/after (dB, against the target views, what the gate
    compares); depth_consistency_r2 / depth_consistency_rmse: :func:`glimpse3d_core.metrics.view_depth_fits` of the
    result, mean over views (when depth estimates were given)."""


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
    ys, xs = np.mgrid[0:H, 0:W]
    fits = view_depth_fits(rendered_depth.cpu().numpy(), estimates, views.alpha, config.alpha_threshold,
                           config.fit_trim, config.fit_tilt)
    result.depth_fits = fits
    for v, (est, fit) in enumerate(zip(estimates, fits, strict=True)):
        if np.isfinite(fit.scale) and fit.scale > 0 and fit.r2 >= config.min_fit_r2:
            result.counts["depth_views_used"] += 1
            fitted[v] = torch.as_tensor(np.where(est.valid, fit.apply(est.depth, xs, ys), 0.0), dtype=fitted.dtype)
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


@torch.no_grad()
def _render_depth(g: Gaussians, views: ViewSet) -> torch.Tensor:
    viewmats, Ks = views.rig.torch(g.means.device)
    return rasterize(g.detach(), viewmats, Ks, views.rig.width, views.rig.height).depth


def _view_psnrs(g: Gaussians, views: ViewSet) -> np.ndarray:
    """PSNR (dB) of ``g`` rendered from every view's camera against that view's target, both on white."""
    pred = render_views(g, views.rig).composite(1.0)
    return np.array([psnr(p, t) for p, t in zip(pred, views.composite(1.0), strict=True)])


def _fit_summary(views: ViewSet, before: np.ndarray, after: np.ndarray) -> dict[str, float]:
    """Input-view and weighted mean other-view PSNR before and after (the other views count by their weights)."""
    w = np.asarray(views.weights, np.float64)[1:]
    out = {"input_psnr_before": float(before[INPUT_VIEW]), "input_psnr_after": float(after[INPUT_VIEW])}
    if len(w) and w.sum() > 0:
        out["views_psnr_before"] = float(np.average(before[1:], weights=w))
        out["views_psnr_after"] = float(np.average(after[1:], weights=w))
    return out


def _refit(g: Gaussians, views: ViewSet, optimize_config: OptimizeConfig, iterations: int, seed: int) -> Gaussians:
    """``iterations`` steps of the optimize stage from ``g``: means at the rate optimisation ended with, no
    densification."""
    end_rate = optimize_config.lr_means * optimize_config.lr_means_final
    config = optimize_config.model_copy(update={"iterations": iterations, "densify": False, "lr_means": end_rate,
                                                "lr_means_final": 1.0, "sh_degree_interval": 1})
    return optimize.run(g, views, config, seed=seed, device=g.means.device).gaussians.detach()


def run(gaussians: Gaussians, views: ViewSet, depth_estimates: list[DepthMap] | None,
        config: RefineConfig, optimize_config: OptimizeConfig | None = None, *, seed: int = 0) -> RefineResult:
    """Refine ``gaussians`` against ``views`` (their rig and silhouettes) and per-view ``depth_estimates``
    (the depth backend run on each view's image; required when ``config.depth_consistency``, used for the
    depth-consistency scores whenever given). The re-fit runs with ``optimize_config`` (the optimize stage's:
    same loss and learning rates; none without it)."""
    g = gaussians.detach()
    result = RefineResult(g, counts={"num_before": len(g), "dropped_background": 0, "dropped_depth": 0,
                                     "pulled": 0, "normals_smoothed": 0, "colors_fused": 0, "depth_views_used": 0,
                                     "accepted": 1})
    if config.depth_consistency and (depth_estimates is None or len(depth_estimates) != len(views)):
        raise ValueError("refine: depth consistency needs one depth estimate per view")
    parts = config.depth_consistency or config.normal_smoothing or config.color_fusion
    refit = optimize_config is not None and config.refit_iterations > 0
    with torch.no_grad():
        if config.depth_consistency:
            g = _depth_consistency(g, views, depth_estimates, _render_depth(g, views), config, result)
        if config.normal_smoothing:
            g = _smooth_normals(g, config, result)
        if config.color_fusion and len(g):
            g = _fuse_colors(g, views, _render_depth(g, views), config, result)
    if not len(g):
        raise ValueError("refine: depth consistency dropped every Gaussian")
    if refit:
        g = _refit(g, views, optimize_config, config.refit_iterations, seed)
    if parts or refit:
        before, after = _view_psnrs(gaussians.detach(), views), _view_psnrs(g, views)
        result.scores.update(_fit_summary(views, before, after))
        tol = config.gate_tolerance_db
        worse = any(result.scores[f"{k}_after"] < result.scores[f"{k}_before"] - tol
                    for k in ("input_psnr", "views_psnr") if f"{k}_before" in result.scores)
        if config.gate and worse:
            g, result.counts["accepted"] = gaussians.detach(), 0
    if depth_estimates is not None and len(depth_estimates) == len(views):
        fits = view_depth_fits(_render_depth(g, views).cpu().numpy(), depth_estimates, views.alpha,
                               config.alpha_threshold, config.fit_trim, config.fit_tilt)
        result.scores["depth_consistency_r2"] = float(np.nanmean([f.r2 for f in fits]))
        result.scores["depth_consistency_rmse"] = float(np.nanmean([f.rmse for f in fits]))
    result.gaussians = g
    result.counts["num_after"] = len(g)
    return result
