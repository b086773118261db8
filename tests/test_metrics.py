"""Evaluation kit: protocol PSNR/SSIM on SyncDreamer's chicken, SSIM against scikit-image, IoU, Chamfer/F-score,
back-projection and depth variance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import trimesh
from scipy.spatial import cKDTree
from skimage.metrics import structural_similarity

from glimpse3d_core.groundtruth import normalize_mesh, read_protocol_views
from glimpse3d_core.io.mesh import load_textured_mesh
from glimpse3d_core.metrics import (
    FSCORE_TAU,
    chamfer_fscore,
    depth_variance,
    json_safe,
    lpips_available,
    novel_view_scores,
    novel_view_scores_for,
    psnr,
    silhouette_iou,
    ssim,
    view_points,
    voxel_downsample,
)
from glimpse3d_core.types import ViewSet

CHICKEN = "syncdreamer_eval/syncdreamer_gso_chicken"
CHICKEN_ROTATE_Z = 90.0  # the protocol turns the chicken by -270° = +90° about +Z


@pytest.fixture(scope="module")
def chicken(shared_data):
    return read_protocol_views(shared_data / CHICKEN / "chicken-gt"), read_protocol_views(
        shared_data / CHICKEN / "chicken-pr"
    )


def test_chicken_protocol_psnr(chicken):
    gt, pr = chicken
    scores = novel_view_scores_for(pr, gt)
    summary = scores.summary
    assert summary["psnr"] == pytest.approx(25.41, abs=0.05)
    assert summary["input_psnr"] == pytest.approx(scores.psnr_per_view[0])
    assert (summary["input_psnr"] + 15 * summary["novel_psnr"]) / 16 == pytest.approx(summary["psnr"])
    assert 0.8 < summary["ssim"] < 1.0 and len(scores.ssim_per_view) == 16
    if not lpips_available():
        assert summary["lpips"] is None and scores.lpips_per_view is None


def test_psnr_values():
    a = np.full((4, 4, 3), 0.5, np.float32)
    assert psnr(a, a) == math.inf
    assert psnr(a, a + 0.1) == pytest.approx(20.0, abs=1e-4)
    with pytest.raises(ValueError, match="shape"):
        psnr(a, a[:2])
    with pytest.raises(ValueError, match="NaN"):
        psnr(a, np.full_like(a, np.nan))


def test_ssim_matches_scikit_image(chicken):
    gt, pr = chicken
    g, p = gt.composite(), pr.composite()
    rng = np.random.default_rng(1)
    noisy = np.clip(g[5] + rng.normal(0, 0.05, g[5].shape), 0, 1).astype(np.float32)
    for a, b in [(p[3], g[3]), (noisy, g[5])]:
        data_range = max(np.ptp(a), np.ptp(b))
        reference = structural_similarity(
            a.astype(np.float64), b.astype(np.float64), gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False, data_range=data_range, channel_axis=2,
        )
        assert ssim(a, b) == pytest.approx(reference, abs=1e-7)
    assert ssim(g[0], g[0]) == pytest.approx(1.0)
    assert ssim(p[3], g[3], crop_border=False) != pytest.approx(ssim(p[3], g[3]), abs=1e-4)


def test_novel_view_split_and_json():
    gt = np.zeros((3, 16, 16, 3), np.float32)
    pred = gt.copy()
    pred[1:] += 0.1
    summary = novel_view_scores(pred, gt, with_lpips=False).summary
    assert summary["input_psnr"] == math.inf and summary["novel_psnr"] == pytest.approx(20.0, abs=1e-4)
    assert json_safe(summary)["input_psnr"] == "inf"
    assert summary["input_ssim"] == 1.0  # constant images: SSIM falls back to data range 1


def test_silhouette_iou():
    a = np.zeros((2, 8, 8), np.float32)
    b = a.copy()
    a[:, :4] = 1.0
    b[:, 2:6] = 0.9
    assert silhouette_iou(a, b) == pytest.approx(1 / 3)
    assert silhouette_iou(a, a) == 1.0 and silhouette_iou(np.zeros(3), np.zeros(3)) == 1.0


def test_chamfer_fscore():
    grid = np.stack(np.meshgrid(*[np.linspace(0, 1, 11)] * 3, indexing="ij"), -1).reshape(-1, 3)
    same = chamfer_fscore(grid, grid)
    assert same.chamfer == 0 and same.fscore == 1.0 and same.tau == pytest.approx(FSCORE_TAU)
    shifted = chamfer_fscore(grid + np.array([0.03, 0, 0]), grid)  # grid spacing 0.1: neighbour 0.03 away
    assert shifted.chamfer == pytest.approx(0.03) and shifted.fscore == 1.0
    # shifted 0.07 up: 10 of 11 layers are 0.03 from the next layer, the outermost layer 0.07 (> tau = 0.05)
    layered = chamfer_fscore(grid + np.array([0, 0, 0.07]), grid)
    assert layered.chamfer == pytest.approx((10 * 0.03 + 0.07) / 11)
    assert layered.precision == pytest.approx(10 / 11) and layered.recall == pytest.approx(10 / 11)
    half = chamfer_fscore(grid[grid[:, 2] <= 0.5], grid)  # every prediction on the gt; the upper layers missed
    assert half.accuracy == 0 and half.completeness == pytest.approx(np.mean(np.maximum(grid[:, 2] - 0.5, 0)))
    assert half.chamfer == pytest.approx(half.completeness / 2)
    apart = chamfer_fscore(grid + np.array([0, 0, 2.0]), grid)
    assert apart.fscore == 0.0 and apart.chamfer == pytest.approx(1.5)
    with pytest.raises(ValueError, match="NaN"):
        chamfer_fscore(np.full((2, 3), np.nan), grid)


def test_voxel_downsample():
    points = np.array([[0.001, 0.001, 0.001], [0.003, 0.001, 0.001], [0.5, 0.5, 0.5]])
    down = voxel_downsample(points, 0.01)
    assert len(down) == 2 and np.allclose(sorted(down[:, 0]), [0.002, 0.5])
    dense = np.random.default_rng(0).random((20_000, 3))
    assert len(voxel_downsample(dense, 0.1)) <= 11**3


def test_gt_depth_backprojects_onto_the_mesh(shared_data, chicken):
    """Protocol depth decoding + rig + back-projection land on the normalised, turned GSO mesh."""
    gt, _ = chicken
    mesh = load_textured_mesh(shared_data / CHICKEN / "chicken-mesh/meshes/model.obj")
    surface = normalize_mesh(mesh, CHICKEN_ROTATE_Z).geometry()[0]
    points = view_points(gt)[::20]
    samples, _ = trimesh.sample.sample_surface(surface, 300_000, seed=0)
    distance, _ = cKDTree(samples).query(points)
    assert np.median(distance) < 0.002 and np.mean(distance) < 0.004


def test_depth_variance_low_for_consistent_views_high_for_floaters(chicken):
    gt, _ = chicken
    consistent = depth_variance(gt, stride=4)
    assert consistent.value is not None and consistent.value < 1e-4
    assert consistent.multi_view_fraction > 0.5
    depth = gt.depth.copy()
    depth[4] = np.where(depth[4] > 0, depth[4] - 0.15, 0.0)  # view 4 sees a surface floating 0.15 closer
    floaters = depth_variance(ViewSet(gt.rig, gt.rgb, gt.alpha, depth), stride=4)
    assert floaters.value > 20 * consistent.value
    with pytest.raises(ValueError, match="depth"):
        depth_variance(ViewSet(gt.rig, gt.rgb, gt.alpha))
