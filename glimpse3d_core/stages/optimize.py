"""Optimize stage: fit the Gaussians to the target views by gradient descent through the rasteriser.

Loss per view: ``(1 - ssim_lambda) * L1 + ssim_lambda * (1 - SSIM)`` on RGB composited over a uniform
``background`` grey (1 = white, the evaluation protocol's), plus ``alpha_lambda * L1(alpha)`` against the target
silhouette. Views are weighted by ``ViewSet.weights`` (the input photo highest); every step fits the heaviest view
(the input photo) together with ``views_per_step - 1`` other views drawn at random.

Parameters and optimiser follow gsplat's ``examples/simple_trainer.py`` (values learnt from it, code our own): one
Adam per parameter group (eps 1e-15), learning rates means ``1.6e-4 * scene_scale`` decaying exponentially to
``lr_means_final`` of that, log-scales 5e-3, quaternions 1e-3, opacity logits 5e-2, SH DC 2.5e-3, higher SH
2.5e-3/20; the SH degree grows by one every ``sh_degree_interval`` steps. ``scene_scale`` is 1.1 x the largest
distance of a camera centre from the cameras' mean, as simple_trainer computes it.

Densification uses gsplat's ``DefaultStrategy`` (clone/split/prune/opacity reset) with its thresholds and a schedule
shortened to the number of iterations; it needs the rasteriser's ``info`` (``means2d`` with gradient, ``radii``,
``width``, ``height``, ``n_cameras``), which both render backends provide. ``densify=False`` keeps the Gaussian count
fixed (the CPU "fast" preset, where every extra Gaussian costs time).

Deterministic under ``seed`` on CPU (view sampling from a seeded generator; no other randomness). gsplat's CUDA
backward accumulates with atomics, so CUDA runs agree only to floating-point rounding.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from glimpse3d_core.failpoints import failpoint
from glimpse3d_core.imaging import resize, ssim
from glimpse3d_core.render import rasterize, resolve_backend
from glimpse3d_core.render.gsplat_backend import gsplat_rasterization
from glimpse3d_core.types import CameraRig, Gaussians, ViewSet

ADAM_EPS = 1e-15
SCENE_SCALE_MARGIN = 1.1
NEAR, FAR = 0.01, 100.0
"""Clipping planes of the fitting renders (:func:`glimpse3d_core.render.rasterize`'s defaults)."""


class OptimizeConfig(BaseModel):
    """Configuration of the optimize stage (learning rates as in gsplat's simple_trainer)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    iterations: int = Field(150, ge=0, description="optimisation steps")
    views_per_step: int = Field(3, ge=1, description="views per step: the input view plus random others")
    image_size: int | None = Field(None, ge=16, description="fitting resolution (None = the views' own size)")
    background: float = Field(1.0, ge=0, le=1, description="grey level the RGB loss composites both images on")
    ssim_lambda: float = Field(0.2, ge=0, le=1, description="weight of D-SSIM against L1")
    alpha_lambda: float = Field(0.5, ge=0, description="weight of the silhouette (alpha) L1 loss")
    sh_degree: int = Field(0, ge=0, le=3, description="spherical-harmonic degree of the fitted colours")
    sh_degree_interval: int = Field(1000, ge=1, description="steps between SH degree increments")
    lr_means: float = Field(1.6e-4, gt=0, description="means learning rate, times scene_scale")
    lr_means_final: float = Field(0.01, gt=0, le=1, description="final means learning rate as a fraction")
    lr_scales: float = Field(5e-3, gt=0, description="log-scale learning rate")
    lr_quats: float = Field(1e-3, gt=0, description="quaternion learning rate")
    lr_opacities: float = Field(5e-2, gt=0, description="opacity-logit learning rate")
    lr_sh0: float = Field(2.5e-3, gt=0, description="SH DC learning rate")
    lr_shN: float = Field(2.5e-3 / 20, gt=0, description="higher-order SH learning rate")
    densify: bool = Field(False, description="use gsplat's DefaultStrategy (clone/split/prune)")
    refine_start_iter: int = Field(100, ge=0, description="first densification step")
    refine_stop_fraction: float = Field(0.6, gt=0, le=1, description="densify until this fraction of iterations")
    refine_every: int = Field(50, ge=1, description="steps between densification rounds")
    reset_every: int = Field(3000, ge=1, description="steps between opacity resets")
    grow_grad2d: float = Field(2e-4, gt=0, description="image-space gradient threshold for growing")
    grow_scale3d: float = Field(0.01, gt=0, description="scale (x scene_scale) separating clone from split")
    prune_opa: float = Field(0.005, gt=0, lt=1, description="prune Gaussians below this opacity")
    prune_scale3d: float = Field(0.1, gt=0, description="prune Gaussians larger than this (x scene_scale)")
    log_every: int = Field(25, ge=1, description="record the loss every this many steps")
    fused_adam: bool = Field(True, description="Adam's fused CUDA kernel (one launch per parameter group; CUDA only)")


@dataclass
class OptimizeResult:
    """The fitted Gaussians and what the fit did."""

    gaussians: Gaussians
    losses: list[float] = field(default_factory=list)
    """Weighted loss every ``log_every`` steps (first and last step included)."""
    iterations: int = 0
    seconds: float = 0.0
    num_initial: int = 0
    num_final: int = 0

    @property
    def iterations_per_second(self) -> float:
        return self.iterations / self.seconds if self.seconds > 0 else float("nan")

    def summary(self) -> dict[str, float | int | None]:
        """What the run record (metrics.json, MLflow, Dagster metadata) keeps of the fit."""
        return {"iterations": self.iterations, "iterations_per_second": self.iterations_per_second,
                "final_loss": self.losses[-1] if self.losses else None, "num_initial": self.num_initial,
                "num_final": self.num_final}


def scene_scale(rig: CameraRig) -> float:
    """1.1 x the largest distance of a camera centre from the mean centre (simple_trainer's scene scale)."""
    centers = np.linalg.inv(rig.viewmats.astype(np.float64))[:, :3, 3]
    spread = np.linalg.norm(centers - centers.mean(0), axis=1).max()
    return SCENE_SCALE_MARGIN * float(spread if spread > 0 else np.linalg.norm(centers, axis=1).max())


def _resized_targets(views: ViewSet, size: int | None, device: torch.device):
    """(rig, rgb [C,H,W,3], alpha [C,H,W]) at the fitting resolution as tensors on ``device``."""
    rgb = torch.as_tensor(views.rgb, dtype=torch.float32, device=device)
    alpha = torch.as_tensor(views.alpha, dtype=torch.float32, device=device)
    if size is None or size == views.rig.width == views.rig.height:
        return views.rig, rgb, alpha
    small = resize(torch.cat([rgb * alpha[..., None], alpha[..., None]], -1), size)  # premultiplied
    a = small[..., 3].clamp(0, 1)
    straight = (small[..., :3] / a[..., None].clamp_min(1e-6)).clamp(0, 1)
    return views.rig.scaled(size, size), straight, a


def _parameters(gaussians: Gaussians, sh_degree: int, device: torch.device) -> torch.nn.ParameterDict:
    g = gaussians.to(device)
    k = (sh_degree + 1) ** 2 - 1
    shN = torch.zeros(len(g), k, 3, device=device)
    keep = min(k, g.shN.shape[1])
    shN[:, :keep] = g.shN[:, :keep]
    tensors = {"means": g.means, "quats": g.quats, "scales": g.log_scales, "opacities": g.opacity_logits,
               "sh0": g.sh0, "shN": shN}
    # copies: the optimiser updates in place and must never touch the caller's Gaussians
    return torch.nn.ParameterDict({k: v.detach().float().clone() for k, v in tensors.items()})


def _optimizers(params: torch.nn.ParameterDict, config: OptimizeConfig, scale: float):
    lrs = {"means": config.lr_means * scale, "quats": config.lr_quats, "scales": config.lr_scales,
           "opacities": config.lr_opacities, "sh0": config.lr_sh0, "shN": config.lr_shN}
    fused = config.fused_adam and params["means"].is_cuda
    return {name: torch.optim.Adam([{"params": params[name], "lr": lr, "name": name}], eps=ADAM_EPS, fused=fused)
            for name, lr in lrs.items()}


def _strategy(config: OptimizeConfig):
    from gsplat.strategy import DefaultStrategy

    return DefaultStrategy(
        prune_opa=config.prune_opa, grow_grad2d=config.grow_grad2d, grow_scale3d=config.grow_scale3d,
        prune_scale3d=config.prune_scale3d, refine_start_iter=config.refine_start_iter,
        refine_stop_iter=int(config.refine_stop_fraction * config.iterations), refine_every=config.refine_every,
        reset_every=config.reset_every,
    )


def view_schedule(weights: np.ndarray, views_per_step: int, iterations: int,
                  generator: torch.Generator) -> torch.Tensor:
    """[iterations, k] view indices: the heaviest view first in every row, then ``k - 1`` distinct others drawn
    uniformly (k = min(views_per_step, number of views)). Drawn up front, so the loop never waits on the host."""
    anchor = int(np.argmax(weights))
    others = torch.tensor([i for i in range(len(weights)) if i != anchor], dtype=torch.long)
    k = min(views_per_step - 1, len(others))
    rows = [torch.cat([torch.tensor([anchor]), others[torch.randperm(len(others), generator=generator)[:k]]])
            for _ in range(iterations)]
    return torch.stack(rows) if rows else torch.zeros(0, k + 1, dtype=torch.long)


def _renderer(device: torch.device):
    """The rasteriser call of the loop, returning (rgb composited on ``bg``, alpha, info). On CPU
    :func:`rasterize` itself; on CUDA ``gsplat.rasterization`` directly (the parameterisation of
    :func:`~glimpse3d_core.render.gsplat_backend.rasterize_gsplat`, colour only: the loss needs no depth), since
    :func:`rasterize` validates every tensor for NaN on each call (a host-device sync per tensor, which costs a
    third of the step rate at hundreds of steps per second); :func:`run` validates its inputs once instead."""
    if resolve_backend("auto", device) != "gsplat":
        def torch_render(g, viewmats, Ks, w, h, bg, degree):
            out = rasterize(g, viewmats, Ks, w, h, background=bg, sh_degree=degree)
            return out.rgb, out.alpha, out.info

        return torch_render

    def gsplat_render(g, viewmats, Ks, w, h, bg, degree):
        colors = g.sh0 if g.shN.shape[1] == 0 else torch.cat([g.sh0, g.shN], dim=1)[:, :(degree + 1) ** 2]
        rgb, alphas, info = gsplat_rasterization()(
            g.means, g.quats, g.log_scales.exp(), torch.sigmoid(g.opacity_logits), colors, viewmats, Ks, w, h,
            near_plane=NEAR, far_plane=FAR, sh_degree=degree, render_mode="RGB", packed=False)
        alpha = alphas[..., 0]
        return rgb + (1.0 - alpha[..., None]) * bg, alpha, info

    return gsplat_render


def view_losses(render_rgb: torch.Tensor, render_alpha: torch.Tensor, target_rgb: torch.Tensor,
                target_alpha: torch.Tensor, config: OptimizeConfig) -> torch.Tensor:
    """Per-view loss [C]; ``render_rgb`` is composited on ``config.background``, targets are straight RGB."""
    target = target_rgb * target_alpha[..., None] + config.background * (1 - target_alpha[..., None])
    l1 = (render_rgb - target).abs().flatten(1).mean(1)
    dssim = 1 - ssim(render_rgb, target)
    alpha_l1 = (render_alpha - target_alpha).abs().flatten(1).mean(1)
    return (1 - config.ssim_lambda) * l1 + config.ssim_lambda * dssim + config.alpha_lambda * alpha_l1


def run(gaussians: Gaussians, views: ViewSet, config: OptimizeConfig, *, seed: int = 0,
        device: str | torch.device = "cpu") -> OptimizeResult:
    """Fit ``gaussians`` to ``views`` (returned on ``device``; the input is not modified). On CUDA the loop never
    waits for the device: the logged losses are read, and a non-finite one reported, after the last step (on the
    CPU at once)."""
    if len(gaussians) == 0:
        raise ValueError("optimize: there are no Gaussians to fit")
    device = torch.device(device)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    rig, target_rgb, target_alpha = _resized_targets(views, config.image_size, device)
    viewmats, Ks = rig.torch(device)
    weights = torch.as_tensor(views.weights, dtype=torch.float32, device=device)
    batches = view_schedule(views.weights, config.views_per_step, config.iterations, generator).to(device)
    background = torch.full((3,), config.background, device=device)
    if not gaussians.is_finite():
        raise ValueError("optimize: the initial Gaussians contain NaN or inf")
    render = _renderer(device)

    scale = scene_scale(views.rig)
    params = _parameters(gaussians, config.sh_degree, device)
    optimizers = _optimizers(params, config, scale)
    decay = config.lr_means_final ** (1.0 / max(config.iterations, 1))
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizers["means"], gamma=decay)
    strategy = _strategy(config) if config.densify else None
    state = strategy.initialize_state(scene_scale=scale) if strategy else None

    result = OptimizeResult(gaussians, num_initial=len(gaussians))
    logged: list[tuple[int, torch.Tensor]] = []  # read after the loop: no host-device sync inside it
    start = time.perf_counter()
    for step in range(config.iterations):
        idx = batches[step]
        rgb, alpha, info = render(_to_render(params), viewmats[idx], Ks[idx], rig.width, rig.height, background,
                                  min(step // config.sh_degree_interval, config.sh_degree))
        losses = view_losses(rgb, alpha, target_rgb[idx], target_alpha[idx], config)
        w = weights[idx]
        loss = (losses * w).sum() / w.sum()
        if strategy:
            strategy.step_pre_backward(params, optimizers, state, step, info)
        loss.backward()
        if strategy:
            strategy.step_post_backward(params, optimizers, state, step, info, packed=False)
        for opt in optimizers.values():
            opt.step()
            opt.zero_grad(set_to_none=True)
        scheduler.step()
        if step == config.iterations // 2:
            failpoint("optimize.midway")
        if step % config.log_every == 0 or step == config.iterations - 1:
            logged.append((step, loss.detach()))
            if device.type == "cpu":  # no device to wait for: stop at once
                _checked_losses(logged[-1:])
    result.losses = _checked_losses(logged)  # on CUDA this waits for the device
    result.seconds = time.perf_counter() - start
    result.iterations = config.iterations
    result.gaussians = _to_render(params).detach()
    result.num_final = len(result.gaussians)
    return result


def _checked_losses(logged: list[tuple[int, torch.Tensor]]) -> list[float]:
    """The logged (step, loss) values as floats; FloatingPointError naming the first non-finite one."""
    values = torch.stack([v for _, v in logged]).tolist() if logged else []
    for (step, _), value in zip(logged, values, strict=True):
        if not math.isfinite(value):
            raise FloatingPointError(f"optimize: the loss became {value} at step {step}")
    return values


def _to_render(params: torch.nn.ParameterDict) -> Gaussians:
    """A :class:`Gaussians` view of the live parameters (gradients flow back into ``params``)."""
    return Gaussians(means=params["means"], quats=params["quats"], log_scales=params["scales"],
                     opacity_logits=params["opacities"], sh0=params["sh0"], shN=params["shN"])
