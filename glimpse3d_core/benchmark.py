"""Scoring a fitted splat against protocol ground truth (the SyncDreamer 16-view layout, view 0 = the input).

One piece of code for ``glimpse3d bench`` and ``research/eval_quality.py``: render the Gaussians from the ground
truth's cameras (SyncDreamer's rig at the ground truth's size), then score every view against the ground truth
composited on white (:mod:`glimpse3d_core.metrics`):

* ``input_*``: view 0 (the photo the pipeline was given), ``novel_*``: the mean of views 1-15, plain: 16-view mean;
* ``psnr`` (dB), ``ssim``, ``lpips`` (only with ``with_lpips`` and local VGG weights; absent otherwise);
* ``*_iou``: silhouette IoU at alpha 0.5;
* ``chamfer``, ``fscore`` (tau = 5 % of the ground truth's extent): only when the ground truth has depth maps
  (rendered from a mesh: ``NNN-depth.png``): both sides' depth back-projected into world points, voxel-downsampled
  at 0.01, as the protocol compares meshes. World units: the protocol's (object in the unit cube).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from glimpse3d_core.groundtruth import NUM_PROTOCOL_VIEWS, read_protocol_views, view_filename
from glimpse3d_core.metrics import chamfer_fscore, novel_view_scores_for, silhouette_iou, view_points, voxel_downsample
from glimpse3d_core.render import render_views
from glimpse3d_core.types import Gaussians, ViewSet

CHAMFER_VOXEL = 0.01
"""Voxel size both point sets are downsampled to before Chamfer / F-score (the protocol's)."""


def score_views(pred: ViewSet, gt: ViewSet, with_lpips: bool = False) -> dict[str, float]:
    """PSNR/SSIM (/LPIPS), silhouette IoU and, where both have depth, Chamfer/F-score of ``pred`` against ``gt``
    (same rig, view 0 = input view)."""
    summary = novel_view_scores_for(pred, gt, with_lpips=with_lpips).summary
    out = {k: float(v) for k, v in summary.items() if v is not None}
    iou = [silhouette_iou(pred.alpha[i], gt.alpha[i]) for i in range(len(gt))]
    out.update(input_iou=iou[0], novel_iou=float(np.mean(iou[1:])), iou=float(np.mean(iou)))
    if gt.depth is not None and pred.depth is not None and (pred.depth > 0).any():
        points = chamfer_fscore(voxel_downsample(view_points(pred), CHAMFER_VOXEL),
                                voxel_downsample(view_points(gt), CHAMFER_VOXEL))
        out.update(chamfer=points.chamfer, fscore=points.fscore)
    return out


def render_like(gaussians: Gaussians, gt: ViewSet) -> ViewSet:
    """The Gaussians rendered from the ground truth's cameras (straight RGB, alpha, expected depth)."""
    return render_views(gaussians, gt.rig)


def score_gaussians(gaussians: Gaussians, gt: ViewSet, with_lpips: bool = False) -> dict[str, float]:
    """:func:`score_views` of the Gaussians rendered from the ground truth's cameras."""
    return score_views(render_like(gaussians, gt), gt, with_lpips)


def copy_baseline(gt: ViewSet) -> ViewSet:
    """The input photo (view 0) as every view: the floor any reconstruction should clear on novel views."""
    n = len(gt)
    return ViewSet(gt.rig, np.repeat(gt.rgb[:1], n, 0), np.repeat(gt.alpha[:1], n, 0))


def find_objects(root: str | Path) -> dict[str, Path]:
    """{name: folder} of the folders directly under ``root`` that hold the protocol's 000.png .. 015.png
    (``root`` itself counts when it holds them); sorted by name. A root with none is an error."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")

    def complete(folder: Path) -> bool:
        return all((folder / view_filename(i)).is_file() for i in range(NUM_PROTOCOL_VIEWS))

    found = {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and complete(p)}
    if not found and complete(root):
        found = {root.name: root}
    if not found:
        raise FileNotFoundError(f"{root}: no folder holds the protocol views {view_filename(0)} .. "
                                f"{view_filename(NUM_PROTOCOL_VIEWS - 1)}")
    return found


def load_ground_truth(folder: str | Path) -> ViewSet:
    """The protocol's 16 views (and depth where present) of one object folder."""
    return read_protocol_views(folder, NUM_PROTOCOL_VIEWS)
