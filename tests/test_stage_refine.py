"""MVCRM refine stage: a planted floater is dropped, normals get smoother, colours move towards the views."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glimpse3d_core.cameras import syncdreamer16_rig
from glimpse3d_core.render import render_views
from glimpse3d_core.stages import optimize, refine
from glimpse3d_core.types import DepthMap, Gaussians, ViewSet, rgb_to_sh0, sh0_to_rgb

SIZE = 48
OFF = refine.RefineConfig(depth_consistency=False, normal_smoothing=False, color_fusion=False, gate=False)


def plate(n: int = 400, seed: int = 0, normal_noise: float = 0.0) -> Gaussians:
    """Flat Gaussians tiling a horizontal 0.6 x 0.6 plate at z = 0 (normals +Z, optionally perturbed)."""
    g = torch.Generator().manual_seed(seed)
    side = int(np.sqrt(n))
    xs = torch.linspace(-0.3, 0.3, side)
    means = torch.stack(torch.meshgrid(xs, xs, indexing="ij"), -1).reshape(-1, 2)
    means = torch.cat([means, torch.zeros(len(means), 1)], 1)
    quats = torch.tensor([[1.0, 0, 0, 0]]).repeat(len(means), 1)
    quats[:, 1:3] += normal_noise * torch.randn(len(means), 2, generator=g)
    spacing = 0.6 / (side - 1)
    log_scales = torch.log(torch.tensor([spacing, spacing, spacing * 0.1])).repeat(len(means), 1)
    rgb = torch.stack([(means[:, 0] + 0.5), (means[:, 1] + 0.5), torch.full((len(means),), 0.3)], 1)
    return Gaussians(means=means, quats=quats, log_scales=log_scales, opacity_logits=torch.full((len(means),), 3.0),
                     sh0=rgb_to_sh0(rgb)[:, None])


def exact_depths(views: ViewSet) -> list[DepthMap]:
    """A perfect 'depth backend': the views' own depth, in another affine scale (as relative depth is)."""
    return [DepthMap(0.5 * d + 2.0, d > 0) for d in views.depth]


@pytest.fixture(scope="module")
def views() -> ViewSet:
    return render_views(plate(), syncdreamer16_rig(SIZE).subset([0, 2, 4, 6, 8, 10, 12, 14]))


def with_floaters(g: Gaussians, points: list[list[float]]) -> Gaussians:
    n = len(points)
    floater = Gaussians(means=torch.tensor(points), quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
                        log_scales=torch.full((n, 3), float(np.log(0.03))), opacity_logits=torch.full((n,), 3.0),
                        sh0=torch.zeros(n, 1, 3))
    return Gaussians.concat([g, floater])


def test_depth_consistency_drops_planted_floaters(views):
    clean = plate()
    dirty = with_floaters(clean, [[0.0, 0.0, 0.35], [0.25, -0.2, -0.3]])
    cfg = OFF.model_copy(update={"depth_consistency": True})
    result = refine.run(dirty, views, exact_depths(views), cfg)
    assert len(result.gaussians) <= len(clean)
    assert len(result.gaussians) >= 0.95 * len(clean)
    kept = result.gaussians.means
    assert float(kept[:, 2].abs().max()) < 0.05  # both floaters are gone, the plate stays
    assert result.counts["dropped_background"] + result.counts["dropped_depth"] >= 2
    assert result.counts["num_before"] == len(dirty) and result.counts["num_after"] == len(kept)
    fit = result.depth_fits[0]
    assert fit.scale == pytest.approx(2.0, rel=0.05) and fit.r2 > 0.9
    assert result.counts["depth_views_used"] == len(views)  # estimate = 0.5 d + 2  =>  d = 2 (estimate) - 4


def test_pull_mode_moves_instead_of_dropping(views):
    dirty = plate()
    shifted = dirty.means.clone()
    patch = (shifted[:, :2].abs() < 0.08).all(1)
    shifted[patch, 2] += 0.1  # a patch lifted off the plate: rendered on top, but the estimate says otherwise
    dirty = Gaussians(means=shifted, quats=dirty.quats, log_scales=dirty.log_scales,
                      opacity_logits=dirty.opacity_logits, sh0=dirty.sh0)
    cfg = OFF.model_copy(update={"depth_consistency": True, "mode": "pull", "depth_tolerance": 0.05})
    result = refine.run(dirty, views, exact_depths(views), cfg)
    assert result.counts["pulled"] > 0
    assert len(result.gaussians) == len(dirty)
    assert float(result.gaussians.means[patch, 2].mean()) < 0.5 * float(shifted[patch, 2].mean())


def test_normal_smoothing_aligns_noisy_normals(views):
    noisy = plate(normal_noise=0.3)
    cfg = OFF.model_copy(update={"normal_smoothing": True, "knn": 8})
    result = refine.run(noisy, views, None, cfg)
    up = torch.tensor([0.0, 0.0, 1.0])
    before = refine.gaussian_normals(noisy) @ up
    after = refine.gaussian_normals(result.gaussians) @ up
    assert float(after.abs().mean()) > float(before.abs().mean()) + 0.01
    assert result.counts["normals_smoothed"] > 0.9 * len(noisy)


def test_color_fusion_moves_colours_towards_views(views):
    wrong = plate()
    wrong = Gaussians(means=wrong.means, quats=wrong.quats, log_scales=wrong.log_scales,
                      opacity_logits=wrong.opacity_logits, sh0=rgb_to_sh0(torch.full((len(wrong), 1, 3), 0.9)))
    cfg = OFF.model_copy(update={"color_fusion": True, "color_blend": 1.0})
    result = refine.run(wrong, views, None, cfg)
    truth = plate().colors
    err_before = (sh0_to_rgb(wrong.sh0[:, 0]) - truth).abs().mean()
    err_after = (result.gaussians.colors - truth).abs().mean()
    assert float(err_after) < 0.5 * float(err_before)
    assert result.counts["colors_fused"] > 0.5 * len(wrong)


def test_all_parts_off_changes_nothing(views):
    g = plate()
    result = refine.run(g, views, None, OFF)
    for k, v in g.tensors().items():
        assert torch.equal(v, result.gaussians.tensors()[k]), k


def test_depth_consistency_needs_estimates(views):
    with pytest.raises(ValueError, match="depth estimate"):
        refine.run(plate(), views, None, refine.RefineConfig())


def tilted_estimates(views: ViewSet) -> list[DepthMap]:
    """A relative estimate that knows the shape but not the image-plane slope: depth minus a gradient in x."""
    xs = np.arange(views.rig.width, dtype=np.float32)[None, :]
    return [DepthMap(0.5 * (d - 0.05 * xs) + 2.0, d > 0) for d in views.depth]


def test_tilt_fit_recovers_what_scale_and_shift_cannot(views):
    estimates = tilted_estimates(views)
    tilted = refine.run(plate(), views, estimates, OFF.model_copy(update={"depth_consistency": True}))
    flat = refine.run(plate(), views, estimates, OFF.model_copy(update={"depth_consistency": True,
                                                                         "fit_tilt": False}))
    assert tilted.counts["depth_views_used"] == len(views)
    assert min(f.r2 for f in tilted.depth_fits) > 0.99
    assert np.mean([f.r2 for f in flat.depth_fits]) < 0.9  # the slope in x is what scale and shift cannot explain
    assert tilted.scores["depth_consistency_r2"] > 0.99 and tilted.scores["depth_consistency_rmse"] < 1e-3


def test_gate_keeps_the_optimised_gaussians_when_refining_hurts(views):
    """A misleading depth estimate (another object's depth) makes depth consistency drop good Gaussians: the gate
    returns the input unchanged; without it the damage goes through."""
    wrong = [DepthMap(np.where(d > 0, 1.0 + np.random.default_rng(i).random(d.shape), 0.0), d > 0)
             for i, d in enumerate(views.depth)]
    cfg = OFF.model_copy(update={"depth_consistency": True, "min_fit_r2": 0.0, "depth_tolerance": 0.01,
                                 "gate": True})
    g = plate()
    gated = refine.run(g, views, wrong, cfg)
    assert gated.counts["accepted"] == 0 and gated.counts["dropped_depth"] > 0
    assert gated.scores["input_psnr_after"] < gated.scores["input_psnr_before"] - 1.0
    for k, v in g.tensors().items():
        assert torch.equal(v, gated.gaussians.tensors()[k]), k
    ungated = refine.run(g, views, wrong, cfg.model_copy(update={"gate": False}))
    assert ungated.counts["accepted"] == 1 and len(ungated.gaussians) < len(g)


def test_refit_recovers_the_fit_that_normal_smoothing_costs(views):
    """Normal smoothing rotates Gaussians the fit had oriented; the short re-fit brings the fit back."""
    g = optimize.run(plate(normal_noise=0.3), views, optimize.OptimizeConfig(iterations=30, views_per_step=2)).gaussians
    cfg = OFF.model_copy(update={"normal_smoothing": True, "flat_ratio": 1.0})
    bare = refine.run(g, views, None, cfg)
    refit = refine.run(g, views, None, cfg.model_copy(update={"refit_iterations": 20}),
                       optimize.OptimizeConfig(views_per_step=2))
    assert refit.scores["input_psnr_after"] > bare.scores["input_psnr_after"]
    assert refit.counts["normals_smoothed"] > 0
