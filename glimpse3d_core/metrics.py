"""Evaluation kit: image metrics by the SyncDreamer protocol, silhouette IoU, point-set Chamfer/F-score and
multi-view depth consistency. Pure functions on numpy arrays and :class:`ViewSet`.

Image metrics follow shared/data/syncdreamer_eval/PROTOCOL.md (SyncDreamer ``eval_nvs.py``): RGBA composited on
white (rgb·a + 1 − a), float RGB in [0,1], 256×256, every view scored separately and averaged; view 0 is the
input view, views 1.. the novel views, reported separately as well.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree

from glimpse3d_core import imaging
from glimpse3d_core.types import CameraRig, ViewSet

FSCORE_TAU = 0.05
"""F-score distance threshold as a fraction of the ground truth's largest bounding-box extent."""
LPIPS_VGG_BACKBONE = "vgg16-397923af.pth"
"""torchvision's VGG16 checkpoint file name that the ``lpips`` package loads (from the torch hub cache)."""


# ----------------------------------------------------------------------------------------------- image metrics
def _check_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred, np.float32), np.asarray(gt, np.float32)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    if not (np.isfinite(pred).all() and np.isfinite(gt).all()):
        raise ValueError("images contain NaN or inf")
    return pred, gt


def composite_white(rgb: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """Straight RGB [...,3] over white with alpha [...] (returned unchanged when alpha is None)."""
    if alpha is None:
        return np.asarray(rgb, np.float32)
    a = np.asarray(alpha, np.float32)[..., None]
    return np.asarray(rgb, np.float32) * a + (1.0 - a)


def psnr(pred: np.ndarray, gt: np.ndarray) -> float:
    """10·log10(1 / MSE) over all pixels and channels of one image pair in [0,1] (inf when identical)."""
    pred, gt = _check_pair(pred, gt)
    mse = float(np.mean((pred.astype(np.float64) - gt) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def ssim(pred: np.ndarray, gt: np.ndarray, data_range: float | None = None, crop_border: bool = True) -> float:
    """SSIM of one image pair [H,W,C] as torchmetrics' ``structural_similarity_index_measure`` computes it with
    its defaults (:func:`glimpse3d_core.imaging.ssim`, in float64: Gaussian window 11×11, σ = 1.5, K1 = 0.01,
    K2 = 0.03, per-channel local statistics, averaged over the map).

    ``data_range=None`` is torchmetrics' default and the protocol's: max(pred range, gt range) of this pair
    (pass 1.0 for a fixed range; two constant images, where torchmetrics returns NaN, use 1.0).
    ``crop_border=True`` drops the 5-pixel border of the map before averaging, as torchmetrics did until 1.4
    (the version SyncDreamer's published numbers used; equal to scikit-image's Gaussian SSIM); ``False``
    averages the full map of reflect-padded images, as torchmetrics >= 1.5 does (its PR #2721).
    """
    pred, gt = _check_pair(pred, gt)
    if pred.ndim != 3:
        raise ValueError(f"expected [H,W,C] images, got {pred.shape}")
    if data_range is None:
        data_range = max(float(pred.max() - pred.min()), float(gt.max() - gt.min())) or 1.0
    x, y = (torch.from_numpy(v.astype(np.float64))[None] for v in (pred, gt))
    return float(imaging.ssim(x, y, data_range=data_range, padding="valid" if crop_border else "reflect")[0])


def lpips_available() -> bool:
    """True when the ``lpips`` package and torchvision's VGG16 weights are present locally (no download)."""
    try:
        import lpips  # noqa: F401
    except ImportError:
        return False
    return (Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_VGG_BACKBONE).is_file()


def lpips_vgg(preds: np.ndarray, gts: np.ndarray) -> list[float] | None:
    """LPIPS (VGG, inputs scaled to [-1,1], as the protocol) per image pair of [C,H,W,3]; None without weights."""
    if not lpips_available():
        return None
    import lpips

    model = lpips.LPIPS(net="vgg", verbose=False).eval()
    with torch.no_grad():
        a = torch.from_numpy(np.asarray(preds, np.float32)).permute(0, 3, 1, 2) * 2 - 1
        b = torch.from_numpy(np.asarray(gts, np.float32)).permute(0, 3, 1, 2) * 2 - 1
        return [float(model(b[i : i + 1], a[i : i + 1]).flatten()[0]) for i in range(len(a))]


def _mean(values: list[float] | None, indices: slice) -> float | None:
    if values is None or not values[indices]:
        return None
    return float(np.mean(values[indices]))


@dataclass
class NovelViewScores:
    """Per-view and averaged PSNR/SSIM/LPIPS (LPIPS None when its weights are absent). ``input_*`` is view 0,
    ``novel_*`` the mean over views 1.., plain names the mean over all views (the protocol's number)."""

    psnr_per_view: list[float]
    ssim_per_view: list[float]
    lpips_per_view: list[float] | None

    @property
    def summary(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for name, values in (("psnr", self.psnr_per_view), ("ssim", self.ssim_per_view),
                             ("lpips", self.lpips_per_view)):
            out[name] = _mean(values, slice(None))
            out[f"input_{name}"] = _mean(values, slice(0, 1))
            out[f"novel_{name}"] = _mean(values, slice(1, None))
        return out

    def as_dict(self) -> dict:
        return {**self.summary, **asdict(self), "num_views": len(self.psnr_per_view)}


def novel_view_scores(pred_rgb: np.ndarray, gt_rgb: np.ndarray, with_lpips: bool = True) -> NovelViewScores:
    """Score composited predictions [C,H,W,3] against composited ground truth [C,H,W,3], view by view."""
    pred_rgb, gt_rgb = _check_pair(pred_rgb, gt_rgb)
    if pred_rgb.ndim != 4 or pred_rgb.shape[-1] != 3 or len(pred_rgb) == 0:
        raise ValueError(f"expected [C,H,W,3] view stacks, got {pred_rgb.shape}")
    return NovelViewScores(
        psnr_per_view=[psnr(p, g) for p, g in zip(pred_rgb, gt_rgb, strict=True)],
        ssim_per_view=[ssim(p, g) for p, g in zip(pred_rgb, gt_rgb, strict=True)],
        lpips_per_view=lpips_vgg(pred_rgb, gt_rgb) if with_lpips else None,
    )


def novel_view_scores_for(pred: ViewSet, gt: ViewSet, with_lpips: bool = True) -> NovelViewScores:
    """The protocol on two view sets: both composited on white, then :func:`novel_view_scores`."""
    return novel_view_scores(pred.composite(1.0), gt.composite(1.0), with_lpips)


# ----------------------------------------------------------------------------------------------- silhouettes
def silhouette_iou(alpha_a: np.ndarray, alpha_b: np.ndarray, threshold: float = 0.5) -> float:
    """Intersection over union of the masks alpha > threshold, pooled over all pixels of all views given
    ([H,W] or [C,H,W]); 1.0 when both are empty."""
    a, b = np.asarray(alpha_a) > threshold, np.asarray(alpha_b) > threshold
    if a.shape != b.shape:
        raise ValueError(f"alpha shapes differ: {a.shape} vs {b.shape}")
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


# ----------------------------------------------------------------------------------------------- point sets
@dataclass
class PointSetScores:
    """Chamfer distance (mean of the two mean nearest-neighbour distances, Euclidean, not squared), those two means
    (``accuracy``: prediction -> gt, ``completeness``: gt -> prediction) and the F-score at ``tau`` with its
    precision (prediction -> gt) and recall (gt -> prediction)."""

    chamfer: float
    fscore: float
    precision: float
    recall: float
    tau: float
    accuracy: float
    completeness: float


def _points(name: str, pts: np.ndarray) -> np.ndarray:
    pts = np.asarray(pts, np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) == 0:
        raise ValueError(f"{name} must be a non-empty [N,3] array, got {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError(f"{name} contains NaN or inf")
    return pts


def chamfer_fscore(pred_points: np.ndarray, gt_points: np.ndarray, tau_fraction: float = FSCORE_TAU) -> PointSetScores:
    """Compare point sets [N,3] and [M,3]; tau = ``tau_fraction`` × the gt's largest bounding-box extent."""
    pred, gt = _points("pred_points", pred_points), _points("gt_points", gt_points)
    tau = tau_fraction * float((gt.max(0) - gt.min(0)).max())
    d_pred, _ = cKDTree(gt).query(pred)
    d_gt, _ = cKDTree(pred).query(gt)
    precision, recall = float((d_pred < tau).mean()), float((d_gt < tau).mean())
    f = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    accuracy, completeness = float(d_pred.mean()), float(d_gt.mean())
    return PointSetScores((accuracy + completeness) / 2, f, precision, recall, tau, accuracy, completeness)


def voxel_downsample(points: np.ndarray, voxel_size: float = 0.01) -> np.ndarray:
    """One point per occupied voxel, the mean of the points inside it (as Open3D's ``voxel_down_sample``, which
    the protocol applies with 0.01 to both point sets before the Chamfer distance). Voxel order, not input order."""
    pts = _points("points", points)
    if voxel_size <= 0:
        raise ValueError(f"voxel_size must be > 0, got {voxel_size}")
    keys = np.floor((pts - (pts.min(0) - voxel_size / 2)) / voxel_size).astype(np.int64)
    _, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    sums = np.zeros((len(counts), 3))
    np.add.at(sums, inverse.reshape(-1), pts)
    return sums / counts[:, None]


def pixels_to_world(xs: np.ndarray, ys: np.ndarray, z: np.ndarray, viewmat: np.ndarray, K: np.ndarray,
                    pixel_offset: float = 0.5) -> np.ndarray:
    """World points [N,3] of pixels (xs, ys) at z-depths z. Pixel (x, y) is taken at (x + pixel_offset,
    y + pixel_offset): 0.5 = pixel centres (our convention); SyncDreamer's evaluation uses 0."""
    z = np.asarray(z, np.float64)
    cam = np.stack([(xs + pixel_offset - K[0, 2]) / K[0, 0] * z, (ys + pixel_offset - K[1, 2]) / K[1, 1] * z, z], 1)
    c2w = np.linalg.inv(np.asarray(viewmat, np.float64))
    return cam @ c2w[:3, :3].T + c2w[:3, 3]


def backproject(depth: np.ndarray, valid: np.ndarray, viewmat: np.ndarray, K: np.ndarray,
                pixel_offset: float = 0.5) -> np.ndarray:
    """World points [N,3] of the valid pixels of a z-depth map [H,W], row-major (see :func:`pixels_to_world`)."""
    ys, xs = np.nonzero(valid)
    return pixels_to_world(xs, ys, depth[ys, xs], viewmat, K, pixel_offset)


def view_points(views: ViewSet, pixel_offset: float = 0.5) -> np.ndarray:
    """All views' depth back-projected and stacked (valid = depth > 0)."""
    if views.depth is None:
        raise ValueError("the view set has no depth")
    rig = views.rig
    return np.concatenate([
        backproject(views.depth[i], views.depth[i] > 0, rig.viewmats[i], rig.Ks[i], pixel_offset)
        for i in range(len(views))
    ])


# ----------------------------------------------------------------------------------------------- depth consistency
@dataclass
class DepthFit:
    """Least-squares fit ``target ~ s * estimate + t (+ a * x + b * y)`` of a relative depth estimate to a depth
    map over given pixels: the coefficients, R² (share of the target's variance explained by the fit; 0 for a
    constant target) and the RMS residual in the target's units, both over the pixels the refit kept."""

    scale: float
    shift: float
    tilt: tuple[float, float]
    r2: float
    rmse: float

    def apply(self, estimate: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        return self.scale * estimate + self.shift + self.tilt[0] * xs + self.tilt[1] * ys


NO_FIT = DepthFit(math.nan, math.nan, (0.0, 0.0), math.nan, math.nan)


def fit_depth(estimate: np.ndarray, target: np.ndarray, xs: np.ndarray, ys: np.ndarray, trim: float = 0.2,
              tilt: bool = True) -> DepthFit:
    """Fit ``estimate`` [N] to ``target`` [N] at pixels (``xs``, ``ys``) [N] (in pixels; the tilt term is per pixel)
    by least squares, then refit once without the worst ``trim`` share of residuals (so that the outliers being
    looked for do not bend the fit). ``tilt`` adds an image-plane gradient: a relative-depth estimate of an
    object (silhouette inflation in particular) knows its shape but not how its supporting plane slopes away from
    a camera looking down at 30°, which otherwise dominates the rendered depth's variance. Fewer than 5 pixels:
    :data:`NO_FIT`."""
    if estimate.size < 5:
        return NO_FIT
    columns = [estimate, np.ones_like(estimate)] + ([xs, ys] if tilt else [])
    A = np.stack(columns, 1).astype(np.float64)
    target = np.asarray(target, np.float64)
    coef = np.linalg.lstsq(A, target, rcond=None)[0]
    keep = np.ones(len(A), dtype=bool)
    if trim > 0:
        residual = np.abs(A @ coef - target)
        keep = residual <= np.quantile(residual, 1 - trim)
        if keep.sum() >= A.shape[1]:
            coef = np.linalg.lstsq(A[keep], target[keep], rcond=None)[0]
    kept, fitted = target[keep], A[keep] @ coef
    total = float(((kept - kept.mean()) ** 2).sum())
    sse = float(((kept - fitted) ** 2).sum())
    tilt_coef = (float(coef[2]), float(coef[3])) if tilt else (0.0, 0.0)
    return DepthFit(float(coef[0]), float(coef[1]), tilt_coef, 1.0 - sse / total if total > 0 else 0.0,
                    math.sqrt(sse / max(len(kept), 1)))


def view_depth_fits(rendered_depth: np.ndarray, estimates: list, alpha: np.ndarray, alpha_threshold: float = 0.1,
                    trim: float = 0.2, tilt: bool = True) -> list[DepthFit]:
    """Multi-view depth consistency of a splat with a depth estimator: for every view, the estimator's relative
    depth (``estimates[i]``: a :class:`~glimpse3d_core.types.DepthMap`) fitted to the splat's rendered camera-z
    ``rendered_depth[i]`` [H,W] (:func:`fit_depth`) over the pixels where both are valid and the view's target
    ``alpha[i]`` is at least ``alpha_threshold``. High R² / low RMSE: the estimator sees the shape the splat
    renders in that view."""
    fits = []
    for i, est in enumerate(estimates):
        if est.depth.shape != rendered_depth[i].shape:
            raise ValueError(f"depth estimate {i} is {est.depth.shape}, the rendered depth {rendered_depth[i].shape}")
        both = est.valid & (rendered_depth[i] > 0) & (alpha[i] >= alpha_threshold)
        ys, xs = np.nonzero(both)
        fits.append(fit_depth(est.depth[both], rendered_depth[i][both], xs, ys, trim, tilt))
    return fits


@dataclass
class DepthVariance:
    """Result of :func:`depth_variance`: ``value`` (None when no point is seen by two views), the number of
    points seen by >= 2 views and their fraction of all valid pixels sampled."""

    value: float | None
    num_points: int
    multi_view_fraction: float


def _project(points: np.ndarray, viewmat: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cam = points @ viewmat[:3, :3].T + viewmat[:3, 3]
    z = cam[:, 2]
    safe = np.where(z > 1e-9, z, 1.0)
    return cam[:, 0] / safe * K[0, 0] + K[0, 2], cam[:, 1] / safe * K[1, 1] + K[1, 2], z


def depth_variance(views: ViewSet, extent: float = 1.0, occlusion_margin: float = 0.02, stride: int = 1
                   ) -> DepthVariance:
    """Multi-view depth consistency (low = the views agree on one surface), the exact recipe:

    1. Every view i, every ``stride``-th valid pixel p (depth > 0) gives a world point X = backproject_i(p)
       through the pixel centre.
    2. For every view j (j = i included), X projects to the pixel q = floor(π_j(X)). View j *observes* X when q
       is inside the image, its depth D_j(q) is valid, and X is not hidden behind j's surface:
       z_j(X) <= D_j(q) + occlusion_margin·extent. (X in front of j's surface — free space in j — counts: it
       is a disagreement.) j's measurement is its own surface point Y_j = backproject_j(q, D_j(q)).
    3. Reprojected into the reference view i, each measurement has depth z_i(Y_j). For points observed by >= 2
       views, take the population variance of {z_i(Y_j)} over the observing views.
    4. The result is the mean of those variances over all such points, divided by extent².
    """
    if views.depth is None:
        raise ValueError("depth_variance needs a view set with depth")
    if extent <= 0 or stride < 1:
        raise ValueError("extent must be > 0 and stride >= 1")
    rig: CameraRig = views.rig
    depth = views.depth.astype(np.float64)
    valid = depth > 0
    margin = occlusion_margin * extent
    variances, sampled = [], 0
    for i in range(len(views)):
        mask = np.zeros_like(valid[i])
        mask[::stride, ::stride] = valid[i, ::stride, ::stride]
        X = backproject(depth[i], mask, rig.viewmats[i], rig.Ks[i])
        sampled += len(X)
        if len(X) == 0:
            continue
        total = np.zeros(len(X))
        total_sq = np.zeros(len(X))
        count = np.zeros(len(X))
        for j in range(len(views)):
            u, v, z = _project(X, rig.viewmats[j], rig.Ks[j])
            qx, qy = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
            idx = np.nonzero((z > 0) & (qx >= 0) & (qx < rig.width) & (qy >= 0) & (qy < rig.height))[0]
            d_j = depth[j, qy[idx], qx[idx]]
            seen = valid[j, qy[idx], qx[idx]] & (z[idx] <= d_j + margin)
            idx, d_j = idx[seen], d_j[seen]
            if len(idx) == 0:
                continue
            Y = pixels_to_world(qx[idx], qy[idx], d_j, rig.viewmats[j], rig.Ks[j])
            _, _, z_ref = _project(Y, rig.viewmats[i], rig.Ks[i])
            total[idx] += z_ref
            total_sq[idx] += z_ref**2
            count[idx] += 1
        multi = count >= 2
        mean = total[multi] / count[multi]
        variances.append(np.maximum(total_sq[multi] / count[multi] - mean**2, 0.0))
    all_var = np.concatenate(variances) if variances else np.zeros(0)
    fraction = len(all_var) / sampled if sampled else 0.0
    value = float(all_var.mean() / extent**2) if len(all_var) else None
    return DepthVariance(value, len(all_var), fraction)


def json_safe(value):
    """A copy of nested dicts/lists with non-finite floats spelled as strings ("inf", "-inf", "nan"), so that
    strict JSON parsers accept it (a copied input view scores PSNR = inf)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
