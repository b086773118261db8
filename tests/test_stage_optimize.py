"""Optimize stage on a tiny synthetic scene: the fit lowers the loss and raises PSNR, and is deterministic; its
loss, Adam and colour variants agree with one another (CUDA-only variants in the tests marked ``cuda``)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from glimpse3d_core.cameras import syncdreamer16_rig
from glimpse3d_core.imaging import ssim
from glimpse3d_core.metrics import psnr
from glimpse3d_core.render import render_views
from glimpse3d_core.stages import optimize
from glimpse3d_core.types import Gaussians, ViewSet, rgb_to_sh0
from tests.markers import DEVICES, cuda_only

SIZE = 32
VIEWS = [0, 4, 8, 12]


def blob(n: int, seed: int) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * 0.15
    rgb = torch.rand(n, 3, generator=g)
    return Gaussians(means=means, quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
                     log_scales=torch.full((n, 3), float(np.log(0.05))), opacity_logits=torch.full((n,), 1.0),
                     sh0=rgb_to_sh0(rgb)[:, None])


@pytest.fixture(scope="module")
def target() -> ViewSet:
    views = render_views(blob(150, seed=0), syncdreamer16_rig(SIZE).subset(VIEWS))
    views.weights = np.array([3.0, 1.0, 1.0, 1.0], np.float32)
    return views


def mean_psnr(g: Gaussians, views: ViewSet) -> float:
    pred = render_views(g, views.rig).composite(1.0)
    return float(np.mean([psnr(p, t) for p, t in zip(pred, views.composite(1.0), strict=True)]))


FAST = optimize.OptimizeConfig(iterations=40, views_per_step=2, image_size=None, lr_means=1e-3, lr_sh0=2e-2,
                                log_every=5)


def test_fit_lowers_loss_and_raises_psnr(target):
    start = blob(150, seed=1)
    result = optimize.run(start, target, FAST, seed=0)
    assert result.losses[-1] < 0.8 * result.losses[0]
    assert mean_psnr(result.gaussians, target) > mean_psnr(start, target) + 1.0
    assert result.iterations == 40 and result.num_final == result.num_initial == 150
    assert result.gaussians.is_finite()


def test_deterministic_under_seed(target):
    cfg = FAST.model_copy(update={"iterations": 6})
    a = optimize.run(blob(150, 1), target, cfg, seed=3)
    b = optimize.run(blob(150, 1), target, cfg, seed=3)
    c = optimize.run(blob(150, 1), target, cfg, seed=4)
    for k, v in a.gaussians.tensors().items():
        assert torch.equal(v, b.gaussians.tensors()[k]), k
    assert not torch.equal(a.gaussians.means, c.gaussians.means)


def test_densification_runs_on_cpu(target):
    cfg = FAST.model_copy(update={"iterations": 12, "densify": True, "refine_start_iter": 4, "refine_every": 4,
                                  "refine_stop_fraction": 1.0, "grow_grad2d": 1e-6})
    result = optimize.run(blob(150, 1), target, cfg, seed=0)
    assert result.num_final > result.num_initial
    assert result.gaussians.is_finite()


def test_fitting_resolution_and_sh_degree(target):
    cfg = FAST.model_copy(update={"iterations": 3, "image_size": 16, "sh_degree": 1, "sh_degree_interval": 1})
    result = optimize.run(blob(150, 1), target, cfg)
    assert result.gaussians.sh_degree == 1


def test_ssim_is_one_for_identical_images():
    img = torch.rand(2, 24, 24, 3)
    np.testing.assert_allclose(ssim(img, img).numpy(), 1.0, atol=1e-5)
    assert float(ssim(img, img.flip(1)).max()) < 0.5


def test_non_finite_loss_is_an_error(target):
    rgb = target.rgb.copy()
    rgb[0, 0, 0, 0] = np.nan  # view 0, the heaviest, is in every step
    with pytest.raises(FloatingPointError, match="loss became nan at step 0"):
        optimize.run(blob(150, 1), replace(target, rgb=rgb), FAST.model_copy(update={"iterations": 3}))


def _loss_before_issue_19(render_rgb, render_alpha, target_rgb, target_alpha, weights, config):
    """The stage's loss as it was written before issue 19: ``render_rgb`` composited on a background tensor by
    the renderer, targets composited per step, per-view terms, then the weighted mean."""
    bg = torch.full((3,), config.background)
    render_rgb = render_rgb + (1.0 - render_alpha[..., None]) * bg
    target = target_rgb * target_alpha[..., None] + config.background * (1 - target_alpha[..., None])
    l1 = (render_rgb - target).abs().flatten(1).mean(1)
    dssim = 1 - ssim(render_rgb, target)
    alpha_l1 = (render_alpha - target_alpha).abs().flatten(1).mean(1)
    losses = (1 - config.ssim_lambda) * l1 + config.ssim_lambda * dssim + config.alpha_lambda * alpha_l1
    return (losses * weights).sum() / weights.sum()


def _random_step(views: int, size: int, seed: int, device: str = "cpu"):
    """Random premultiplied renders (rgb, alpha), straight targets (rgb, alpha) of 5 views, weights, indices."""
    g = torch.Generator().manual_seed(seed)
    alpha = torch.rand(views, size, size, generator=g)
    rgb = torch.rand(views, size, size, 3, generator=g) * alpha[..., None]
    target_rgb, target_alpha = torch.rand(5, size, size, 3, generator=g), torch.rand(5, size, size, generator=g)
    weights = torch.tensor([3.0, 1.0, 0.5, 1.0, 2.0])
    idx = torch.randperm(5, generator=g)[:views]
    return [t.to(device) for t in (rgb, alpha, target_rgb, target_alpha, weights, idx)]


def test_step_loss_equals_the_loss_before_issue_19():
    config = optimize.OptimizeConfig(background=0.7, ssim_lambda=0.3, alpha_lambda=0.4, loss_mode="eager")
    rgb, alpha, target_rgb, target_alpha, weights, idx = _random_step(3, 24, seed=0)
    rgb.requires_grad_(True)
    alpha.requires_grad_(True)
    new = optimize.StepLoss(target_rgb, target_alpha, weights, config, views=3)(rgb, alpha, idx)
    old = _loss_before_issue_19(rgb, alpha, target_rgb[idx], target_alpha[idx], weights[idx], config)
    torch.testing.assert_close(new, old, rtol=1e-6, atol=1e-7)
    for a, b in zip(torch.autograd.grad(new, (rgb, alpha)), torch.autograd.grad(old, (rgb, alpha)), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-9)


def _assert_same_gaussians(a: Gaussians, b: Gaussians, **tolerance) -> None:
    for name, value in a.tensors().items():
        torch.testing.assert_close(value, b.tensors()[name], msg=name, **tolerance)


@pytest.mark.parametrize("densify", [False, True])
def test_one_adam_fits_as_one_adam_per_parameter(target, densify):
    """One Adam with a group per parameter (what gsplat's densification edits through per-parameter views) makes
    the same fit as one Adam per parameter, with the means' learning-rate decay, SH degree 1 and densification."""
    cfg = FAST.model_copy(update={"iterations": 9, "sh_degree": 1, "sh_degree_interval": 4, "densify": densify,
                                  "refine_start_iter": 3, "refine_every": 3, "refine_stop_fraction": 1.0,
                                  "grow_grad2d": 1e-6})
    per_group = optimize.run(blob(150, 1), target, cfg.model_copy(update={"adam_mode": "per_group"}), seed=2)
    single = optimize.run(blob(150, 1), target, cfg.model_copy(update={"adam_mode": "single"}), seed=2)
    assert (single.num_final > single.num_initial) == densify
    _assert_same_gaussians(single.gaussians, per_group.gaussians, rtol=1e-6, atol=1e-7)
    assert single.losses == per_group.losses


@pytest.mark.parametrize("device", DEVICES)
def test_adam_steps_and_learning_rate_decay(device):
    """Adam (graphed on CUDA) moves each parameter against its gradient by about its own learning rate, decays
    the means' rate to the final fraction, and zeroes the gradients after each step."""
    params = torch.nn.ParameterDict({"means": torch.zeros(4, 3, device=device),
                                     "sh0": torch.zeros(4, 1, 3, device=device)})
    cfg = optimize.OptimizeConfig(iterations=10, adam_mode="cuda_graph")
    gamma = cfg.lr_means_final ** (1 / cfg.iterations)
    adam = optimize.FitAdam(params, {"means": 2e-2, "sh0": 1e-2}, gamma, cfg)
    assert adam.graphed == (device == "cuda")
    for _ in range(cfg.iterations):
        (params["means"].sum() - params["sh0"].sum()).backward()
        adam.step()
        assert not params["means"].grad.any() and not params["sh0"].grad.any()
    lrs = {g["name"]: float(g["lr"]) for g in adam.optimizers[0].param_groups}
    assert lrs["sh0"] == 1e-2 and lrs["means"] == pytest.approx(2e-2 * cfg.lr_means_final, rel=1e-5)
    expected_means = -2e-2 * sum(gamma**k for k in range(cfg.iterations))  # |Adam step| = lr for a constant gradient
    torch.testing.assert_close(params["means"].cpu(), torch.full((4, 3), expected_means), rtol=1e-4, atol=0)
    torch.testing.assert_close(params["sh0"].cpu(), torch.full((4, 1, 3), 1e-2 * cfg.iterations), rtol=1e-4, atol=0)


def test_rgb_colours_are_what_gsplat_computes_from_sh_degree_0():
    """At degree 0 the colours handed to gsplat instead of SH coefficients equal its SH evaluation (its PyTorch
    reference of the CUDA kernel), ``max(0, 0.5 + SH)``, for any view direction."""
    pytest.importorskip("gsplat")
    from gsplat.cuda._torch_impl import _spherical_harmonics

    g = torch.Generator().manual_seed(0)
    sh0, shN = torch.randn(50, 1, 3, generator=g) * 2, torch.randn(50, 3, 3, generator=g)
    dirs = torch.randn(50, 3, generator=g)
    colors, degree = optimize.gsplat_colors(sh0, shN, 0, rgb=True)
    assert degree is None
    reference = torch.clamp_min(_spherical_harmonics(0, dirs, torch.cat([sh0, shN], 1)) + 0.5, 0.0)
    torch.testing.assert_close(colors, reference)
    assert (colors == 0).any()  # the clamp is exercised
    coeffs, degree = optimize.gsplat_colors(sh0, shN, 0, rgb=False)
    assert degree == 0 and coeffs.shape == (50, 1, 3)
    coeffs, degree = optimize.gsplat_colors(sh0, shN, 1, rgb=True)
    assert degree == 1 and torch.equal(coeffs, torch.cat([sh0, shN], 1))


@pytest.mark.parametrize("mode", ["cuda_graph", "compile"])
@pytest.mark.parametrize("device", DEVICES)
def test_step_loss_modes_equal_eager(mode, device):
    """Each loss mode gives the eager loss and gradients, call after call (a graph replays on new inputs); on CPU
    every mode is eager."""
    config = optimize.OptimizeConfig(loss_mode=mode)
    _, _, target_rgb, target_alpha, weights, _ = _random_step(4, 32, seed=0, device=device)
    loss = optimize.StepLoss(target_rgb, target_alpha, weights, config, views=4)
    eager = optimize.StepLoss(target_rgb, target_alpha, weights, config.model_copy(update={"loss_mode": "eager"}),
                              views=4)
    assert loss.mode == (mode if device == "cuda" else "eager")
    for seed in (1, 2, 3):
        rgb, alpha, *_, idx = _random_step(4, 32, seed=seed, device=device)
        results = []
        for fn in (loss, eager):
            r, a = rgb.clone().requires_grad_(True), alpha.clone().requires_grad_(True)
            value = fn(r, a, idx)
            (2.0 * value).backward()  # a gradient other than 1 reaches the renders scaled
            results.append((value.detach(), r.grad, a.grad))
        for x, y in zip(*results, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6)


@cuda_only
@pytest.mark.parametrize("densify", [False, True])
@pytest.mark.parametrize("mode", ["per_group", "single"])
def test_cuda_graph_fit_matches_eager_fit_on_cuda(target, densify, mode):
    """On CUDA the graphed loss and Adam (re-captured after each densification) fit as the eager ones."""
    cfg = FAST.model_copy(update={"iterations": 30, "sh_degree": 1, "sh_degree_interval": 10, "densify": densify,
                                  "refine_start_iter": 5, "refine_every": 5, "refine_stop_fraction": 0.7,
                                  "grow_grad2d": 1e-6})
    graphed = optimize.run(blob(150, 1), target, cfg, seed=0, device="cuda")
    eager = optimize.run(blob(150, 1), target, cfg.model_copy(update={"adam_mode": mode, "loss_mode": "eager",
                                                                      "rgb_colors": False}), seed=0, device="cuda")
    assert (graphed.num_final > graphed.num_initial) == densify
    assert graphed.num_final == pytest.approx(eager.num_final, rel=0.05)
    np.testing.assert_allclose(graphed.losses, eager.losses, rtol=0.02)
    assert graphed.losses[-1] < 0.9 * graphed.losses[0]
    assert abs(mean_psnr(graphed.gaussians.to("cpu"), target) - mean_psnr(eager.gaussians.to("cpu"), target)) < 0.1



@cuda_only
def test_gsplat_rgb_colours_render_as_sh_degree_0():
    """gsplat renders RGB colours from :func:`optimize.gsplat_colors` as its own SH evaluation at degree 0:
    same images, same gradients to the SH coefficients and the other parameters."""
    pytest.importorskip("gsplat")
    g = blob(300, 2).to("cuda")
    g = replace(g, sh0=g.sh0 + 2.0 * torch.randn_like(g.sh0))  # some colours below 0: the clamp matters
    rig = syncdreamer16_rig(64).subset(VIEWS)
    viewmats, Ks = rig.torch("cuda")
    render = optimize._renderer(torch.device("cuda"), rgb_colors=True)
    render_sh = optimize._renderer(torch.device("cuda"), rgb_colors=False)
    outputs = []
    for fn in (render, render_sh):
        leaves = {k: v.clone().requires_grad_(True) for k, v in g.tensors().items() if v.numel()}
        gs = replace(g, **leaves)
        rgb, alpha, _ = fn(gs, viewmats, Ks, 64, 64, 0)
        (rgb.square().sum() + alpha.sum()).backward()
        outputs.append((rgb.detach(), alpha.detach(), *(leaves[k].grad for k in sorted(leaves))))
    for a, b in zip(*outputs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@cuda_only
def test_cuda_fit_fused_adam_matches_cpu(target):
    """The CUDA path (gsplat, graphed loss and fused Adam, loss read after the loop) fits as well as the CPU one."""
    start = blob(150, seed=1)
    cpu = optimize.run(start, target, FAST, seed=0)
    gpu = optimize.run(start, target, FAST, seed=0, device="cuda")
    assert gpu.gaussians.means.is_cuda and len(gpu.losses) == len(cpu.losses)
    assert mean_psnr(gpu.gaussians.to("cpu"), target) > mean_psnr(cpu.gaussians, target) - 0.5
    a = torch.rand(2, 64, 48, 3, device="cuda")
    b = torch.rand(2, 64, 48, 3, device="cuda")
    torch.testing.assert_close(ssim(a, b).cpu(), ssim(a.cpu(), b.cpu()))
