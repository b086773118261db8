"""CPU tests of the rasteriser (torch backend): analytic cases, a per-pixel brute-force reference, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from glimpse3d_core.cameras import look_at, orbit_rig
from glimpse3d_core.render import RenderInputError, rasterize, render_views, resolve_backend
from glimpse3d_core.render.sh import sh_basis
from glimpse3d_core.render.torch_backend import ALPHA_MAX, ALPHA_MIN, TRANSMITTANCE_MIN, TorchRasterConfig, project
from glimpse3d_core.types import Gaussians, rgb_to_sh0

F_PX, SIZE = 60.0, 32


def _identity_camera(width: int = SIZE, height: int = SIZE, focal: float = F_PX, dtype=torch.float32):
    viewmats = torch.eye(4, dtype=dtype)[None]
    Ks = torch.tensor([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], dtype=dtype)[None]
    return viewmats, Ks


def _gaussians(means, scales, opacities, rgbs, quats=None, shN=None, dtype=torch.float32) -> Gaussians:
    means = torch.as_tensor(means, dtype=dtype).reshape(-1, 3)
    n = len(means)
    scales = torch.as_tensor(scales, dtype=dtype).expand(n).reshape(n, 1).expand(n, 3)  # isotropic
    opacities = torch.as_tensor(opacities, dtype=dtype).expand(n)
    quats = torch.tensor([[1.0, 0, 0, 0]], dtype=dtype).expand(n, 4) if quats is None else quats
    return Gaussians(
        means=means.clone(),
        quats=torch.as_tensor(quats, dtype=dtype).clone(),
        log_scales=scales.log().clone(),
        opacity_logits=torch.logit(opacities).clone(),
        sh0=rgb_to_sh0(torch.as_tensor(rgbs, dtype=dtype).reshape(n, 1, 3)).clone(),
        shN=torch.zeros(n, 0, 3, dtype=dtype) if shN is None else shN,
    )


def _random_scene(n: int, seed: int = 0, sh_degree: int = 1, dtype=torch.float32) -> Gaussians:
    gen = torch.Generator().manual_seed(seed)
    k = (sh_degree + 1) ** 2 - 1
    return Gaussians(
        means=((torch.rand(n, 3, generator=gen) - 0.5) * torch.tensor([0.8, 0.8, 0.6]) + torch.tensor([0, 0, 2.0])).to(
            dtype
        ),
        quats=torch.randn(n, 4, generator=gen, dtype=dtype),
        log_scales=torch.log(torch.rand(n, 3, generator=gen, dtype=dtype) * 0.06 + 0.01),
        opacity_logits=torch.randn(n, generator=gen, dtype=dtype) * 1.5,
        sh0=torch.randn(n, 1, 3, generator=gen, dtype=dtype) * 0.8,
        shN=torch.randn(n, k, 3, generator=gen, dtype=dtype) * 0.2,
    )


def _brute_force(g: Gaussians, viewmats, Ks, width, height, colors):
    """Per-pixel loop over depth-sorted Gaussians, written straight from gsplat's rasterisation rules."""
    proj = project(g, viewmats, Ks, width, height, 0.01, 100.0, TorchRasterConfig())
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    rgb = torch.zeros(height, width, 3, dtype=torch.float64)
    alpha = torch.zeros(height, width, dtype=torch.float64)
    transmittance = torch.ones(height, width, dtype=torch.float64)
    done = torch.zeros(height, width, dtype=torch.bool)
    opacity = torch.sigmoid(g.opacity_logits).double()
    vis = proj.visible[0].nonzero().squeeze(1)
    for i in vis[torch.argsort(proj.depths[0, vis], stable=True)].tolist():
        (mx, my), (a, b, c) = proj.means2d[0, i].double(), proj.conics[0, i].double()
        dx, dy = mx - xs, my - ys
        sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
        al = torch.clamp_max(opacity[i] * torch.exp(-sigma), ALPHA_MAX)
        take = (al >= ALPHA_MIN) & ~done
        next_t = transmittance * (1 - al)
        stop = take & (next_t <= TRANSMITTANCE_MIN)
        done |= stop
        take &= ~stop
        rgb += torch.where(take[..., None], (al * transmittance)[..., None] * colors[i].double(), 0.0)
        transmittance = torch.where(take, next_t, transmittance)
    alpha = 1 - transmittance
    return rgb, alpha


def test_isotropic_gaussian_on_axis_matches_pinhole_and_ewa_extent():
    z, s, o = 2.0, 0.05, 0.5
    g = _gaussians([0.1, -0.05, z], s, o, [1.0, 1.0, 1.0])
    viewmats, Ks = _identity_camera()
    out = rasterize(g, viewmats, Ks, SIZE, SIZE, backend="torch")
    u0, v0 = F_PX * 0.1 / z + SIZE / 2, F_PX * -0.05 / z + SIZE / 2
    ys, xs = torch.meshgrid(torch.arange(SIZE) + 0.5, torch.arange(SIZE) + 0.5, indexing="ij")
    # EWA: J = diag(f/z) (x,y small -> the off-diagonal terms of J are second order), +0.3 px dilation.
    jx, jy = F_PX / z, F_PX / z
    u, v = 0.1 / z, -0.05 / z
    cov = torch.tensor([[jx**2 * (1 + u * u), jx * jy * u * v], [jx * jy * u * v, jy**2 * (1 + v * v)]]) * s * s
    cov += 0.3 * torch.eye(2)
    d = torch.stack([xs - u0, ys - v0], dim=-1)
    sigma = 0.5 * torch.einsum("hwi,ij,hwj->hw", d, torch.linalg.inv(cov), d)
    expected = o * torch.exp(-sigma)
    expected = torch.where(expected >= ALPHA_MIN, expected, 0.0)
    torch.testing.assert_close(out.alpha[0], expected, atol=2e-6, rtol=1e-4)
    centroid = torch.stack([(out.alpha[0] * xs).sum(), (out.alpha[0] * ys).sum()]) / out.alpha[0].sum()
    torch.testing.assert_close(centroid, torch.tensor([u0, v0]), atol=0.05, rtol=0)
    covered = out.alpha[0] > 1e-4
    torch.testing.assert_close(out.depth[0][covered], torch.full_like(out.depth[0][covered], z))
    assert (out.depth[0][~covered] == 0).all()
    torch.testing.assert_close(out.rgb[0], out.alpha[0, ..., None].expand(-1, -1, 3))


def test_opaque_front_gaussian_occludes_the_one_behind_whatever_the_input_order():
    viewmats, Ks = _identity_camera()
    front = ([0, 0, 1.5], 0.3, 0.999, [1.0, 0.0, 0.0])
    back = ([0, 0, 3.0], 0.3, 0.999, [0.0, 0.0, 1.0])
    for first, second in ((front, back), (back, front)):
        g = _gaussians(*[[a, b] for a, b in zip(first, second, strict=True)])
        out = rasterize(g, viewmats, Ks, SIZE, SIZE, backend="torch")
        centre = out.rgb[0, SIZE // 2, SIZE // 2]
        assert centre[0] > 0.99 and centre[2] < 0.01
        assert abs(out.depth[0, SIZE // 2, SIZE // 2].item() - 1.5) < 0.01


def test_transmittance_early_termination_and_alpha_clamp():
    viewmats, Ks = _identity_camera()
    g = _gaussians([[0, 0, 1.0 + 0.1 * i] for i in range(3)], 1.0, 0.9999, [[1.0, 1.0, 1.0]] * 3)
    out = rasterize(g, viewmats, Ks, SIZE, SIZE, backend="torch")
    # alpha is clamped at 0.999 per Gaussian; the second would take T to 1e-6 <= 1e-4, so it is excluded.
    torch.testing.assert_close(out.alpha[0, SIZE // 2, SIZE // 2], torch.tensor(ALPHA_MAX), atol=1e-5, rtol=0)


def test_matches_brute_force_reference_with_sh():
    g = _random_scene(60, seed=3, sh_degree=2)
    viewmats = torch.tensor(look_at(np.array([0.3, -0.4, -0.2]), np.array([0, 0, 2.0])), dtype=torch.float32)[None]
    _, Ks = _identity_camera(40, 24)
    out = rasterize(g, viewmats, Ks, 40, 24, backend="torch", tile_size=8)
    cam_centre = torch.linalg.inv(viewmats[0])[:3, 3]
    dirs = torch.nn.functional.normalize(g.means - cam_centre, dim=-1)
    colors = ((sh_basis(dirs, 2)[..., None] * torch.cat([g.sh0, g.shN], 1)).sum(1) + 0.5).clamp_min(0)
    rgb, alpha = _brute_force(g, viewmats, Ks, 40, 24, colors)
    assert alpha.max() > 0.5
    torch.testing.assert_close(out.alpha[0].double(), alpha, atol=2e-5, rtol=0)
    torch.testing.assert_close(out.rgb[0].double(), rgb, atol=5e-5, rtol=0)


def test_sh_basis_matches_gsplat_reference():
    torch_impl = pytest.importorskip("gsplat.cuda._torch_impl")
    dirs = torch.nn.functional.normalize(torch.randn(50, 3, generator=torch.Generator().manual_seed(1)), dim=-1)
    coeffs = torch.randn(50, 16, 3, generator=torch.Generator().manual_seed(2))
    for degree in range(4):
        ours = (sh_basis(dirs, degree)[..., None] * coeffs[:, : (degree + 1) ** 2]).sum(1)
        torch.testing.assert_close(ours, torch_impl._spherical_harmonics(degree, dirs, coeffs), atol=1e-5, rtol=1e-5)


def test_sh_degree_zero_and_one_agree_when_higher_bands_are_zero_and_degree_cap_drops_them():
    g1 = _random_scene(200, seed=1, sh_degree=1)
    g0 = Gaussians(g1.means, g1.quats, g1.log_scales, g1.opacity_logits, g1.sh0)
    viewmats, Ks = _identity_camera()
    ref = rasterize(g0, viewmats, Ks, SIZE, SIZE, backend="torch")
    capped = rasterize(g1, viewmats, Ks, SIZE, SIZE, backend="torch", sh_degree=0)
    torch.testing.assert_close(capped.rgb, ref.rgb)
    zero_bands = Gaussians(g1.means, g1.quats, g1.log_scales, g1.opacity_logits, g1.sh0, torch.zeros_like(g1.shN))
    torch.testing.assert_close(rasterize(zero_bands, viewmats, Ks, SIZE, SIZE, backend="torch").rgb, ref.rgb)
    assert (rasterize(g1, viewmats, Ks, SIZE, SIZE, backend="torch").rgb - ref.rgb).abs().max() > 1e-2
    with pytest.raises(RenderInputError):
        rasterize(g0, viewmats, Ks, SIZE, SIZE, backend="torch", sh_degree=1)


def test_tile_size_and_chunking_do_not_change_the_image():
    g = _random_scene(250, seed=2)
    rig = orbit_rig(image_size=48)
    viewmats, Ks = rig.torch()
    g = Gaussians(g.means - torch.tensor([0, 0, 2.0]), g.quats, g.log_scales, g.opacity_logits, g.sh0, g.shN)
    viewmats, Ks = viewmats[:2], Ks[:2]
    ref = rasterize(g, viewmats, Ks, 48, 40, backend="torch", tile_size=16)
    assert ref.alpha.max() > 0.9
    options_list = ({"tile_size": 8}, {"tile_size": 32}, {"tile_size": 16, "chunk_pairs": 4096, "block": 8})
    for options in options_list:
        out = rasterize(g, viewmats, Ks, 48, 40, backend="torch", **options)
        for name in ("rgb", "alpha", "depth"):
            torch.testing.assert_close(getattr(out, name), getattr(ref, name), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("cache_pairs", [0, 1 << 20], ids=["recompute", "cached"])
def test_gradients_match_finite_differences_float64(cache_pairs):
    g = _random_scene(6, seed=4, sh_degree=1, dtype=torch.float64)
    g = Gaussians(g.means, g.quats, g.log_scales, g.opacity_logits.clamp(-2, 1.5), g.sh0, g.shN)
    viewmats = torch.stack(
        [
            torch.eye(4, dtype=torch.float64),
            torch.tensor(look_at(np.array([0.4, 0.2, 0.1]), np.array([0, 0, 2.0]))),
        ]
    )
    _, Ks = _identity_camera(12, 10, focal=14.0, dtype=torch.float64)
    Ks = Ks.expand(2, 3, 3)
    names = list(g.tensors())

    def render(*tensors):
        out = rasterize(
            Gaussians(*tensors),
            viewmats,
            Ks,
            12,
            10,
            backend="torch",
            tile_size=4,
            block=2,
            cache_pairs=cache_pairs,
            background=0.3,
        )
        return out.rgb, out.alpha, out.depth

    inputs = tuple(g.tensors()[k].detach().clone().requires_grad_(True) for k in names)
    assert torch.autograd.gradcheck(render, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


def test_blocked_compositing_with_early_termination_keeps_gradients():
    g = _random_scene(300, seed=7, sh_degree=0)
    g = Gaussians(g.means, g.quats, g.log_scales + 1.5, g.opacity_logits + 3, g.sh0, g.shN)  # big and opaque
    viewmats, Ks = _identity_camera()
    grads = []
    for block, cache_pairs in ((16, 0), (1024, 1 << 20)):
        tensors = {k: v.clone().requires_grad_(True) for k, v in g.tensors().items()}
        out = rasterize(
            Gaussians(**tensors), viewmats, Ks, SIZE, SIZE, backend="torch", block=block, cache_pairs=cache_pairs
        )
        (out.rgb.square().sum() + out.depth.sum()).backward()
        grads.append({k: t.grad for k, t in tensors.items()})
    assert (out.alpha > 0.999).float().mean() > 0.9  # mostly opaque: blocks behind terminated tiles are skipped
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-4, rtol=1e-3)


def test_info_supports_gsplat_default_strategy_densification():
    strategy = pytest.importorskip("gsplat.strategy")
    g = _random_scene(300, seed=5, sh_degree=0)
    gsplat_names = {"log_scales": "scales", "opacity_logits": "opacities"}  # the names gsplat.strategy expects
    params = torch.nn.ParameterDict({gsplat_names.get(k, k): torch.nn.Parameter(v) for k, v in g.tensors().items()})
    optimizers = {k: torch.optim.Adam([p], lr=1e-3) for k, p in params.items()}
    default = strategy.DefaultStrategy(refine_start_iter=0, refine_every=2, grow_grad2d=1e-9)
    state = default.initialize_state()
    viewmats, Ks = _identity_camera()
    for step in range(3):  # refines at step 2
        tensors = {k: params[gsplat_names.get(k, k)] for k in g.tensors()}
        out = rasterize(Gaussians(**tensors), viewmats, Ks, SIZE, SIZE, backend="torch")
        default.step_pre_backward(params, optimizers, state, step, out.info)
        out.rgb.mean().backward()
        default.step_post_backward(params, optimizers, state, step, out.info)
    assert len(params["means"]) > 300  # the near-zero threshold makes every visible Gaussian grow


def test_empty_and_fully_culled_inputs_render_transparent():
    viewmats, Ks = _identity_camera()
    empty = _gaussians(torch.zeros(0, 3), torch.zeros(0), torch.zeros(0), torch.zeros(0, 3))
    behind = _gaussians([0, 0, -1.0], 0.1, 0.9, [1, 1, 1])
    for g in (empty, behind):
        out = rasterize(g, viewmats, Ks, SIZE, 20, backend="torch", background=1.0)
        assert out.rgb.shape == (1, 20, SIZE, 3) and out.alpha.shape == out.depth.shape == (1, 20, SIZE)
        assert (out.alpha == 0).all() and (out.depth == 0).all() and (out.rgb == 1).all()


def test_background_and_render_views_straight_colour():
    g = _random_scene(300, seed=6, sh_degree=0)
    g = Gaussians(g.means - torch.tensor([0, 0, 2.0]), g.quats, g.log_scales, g.opacity_logits, g.sh0, g.shN)
    rig = orbit_rig(image_size=32).subset([0, 5])
    viewmats, Ks = rig.torch()
    over_black = rasterize(g, viewmats, Ks, 32, 32, backend="torch")
    over_grey = rasterize(g, viewmats, Ks, 32, 32, backend="torch", background=torch.tensor([0.2, 0.5, 0.8]))
    expected = over_black.rgb + (1 - over_black.alpha[..., None]) * torch.tensor([0.2, 0.5, 0.8])
    torch.testing.assert_close(over_grey.rgb, expected)
    views = render_views(g, rig, backend="torch")
    assert views.rgb.shape == (2, 32, 32, 3) and views.rgb.min() >= 0 and views.rgb.max() <= 1
    # straight colour is clipped to [0,1]; SH colours are only clamped at 0, so compare against min(rgb, alpha)
    expected = torch.minimum(over_black.rgb, over_black.alpha[..., None])
    np.testing.assert_allclose(views.composite(0.0), expected.numpy(), atol=1e-5)


def test_bad_inputs_raise_clear_errors():
    viewmats, Ks = _identity_camera()
    g = _gaussians([0, 0, 2.0], 0.1, 0.5, [1, 1, 1])
    g.means[0, 0] = math.nan
    with pytest.raises(RenderInputError, match="NaN"):
        rasterize(g, viewmats, Ks, SIZE, SIZE, backend="torch")
    good = _gaussians([0, 0, 2.0], 0.1, 0.5, [1, 1, 1])
    with pytest.raises(RenderInputError, match="width"):
        rasterize(good, viewmats, Ks, 0, SIZE, backend="torch")
    with pytest.raises(RenderInputError, match="viewmats"):
        rasterize(good, viewmats[0], Ks, SIZE, SIZE, backend="torch")
    with pytest.raises(RenderInputError, match="unknown option"):
        rasterize(good, viewmats, Ks, SIZE, SIZE, backend="torch", tile_sise=8)
    with pytest.raises(RenderInputError, match="CUDA"):
        resolve_backend("gsplat", "cpu")
    assert resolve_backend("auto", "cpu") == "torch"
