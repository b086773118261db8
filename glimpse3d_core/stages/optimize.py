"""Optimize stage: fit the Gaussians to the target views by gradient descent through the rasteriser.

Loss per view (:func:`fit_loss`): ``(1 - ssim_lambda) * L1 + ssim_lambda * (1 - SSIM)`` on RGB composited over
a uniform ``background`` grey (1 = white, the evaluation protocol's), plus ``alpha_lambda * L1(alpha)`` against the
target silhouette. Views are weighted by ``ViewSet.weights`` (the input photo highest); every step fits the heaviest
view (the input photo) together with ``views_per_step - 1`` other views drawn at random.

Parameters and optimiser follow gsplat's ``examples/simple_trainer.py`` (values learnt from it, code our own): Adam
with a learning rate per parameter (eps 1e-15), means ``1.6e-4 * scene_scale`` decaying exponentially to
``lr_means_final`` of that, log-scales 5e-3, quaternions 1e-3, opacity logits 5e-2, SH DC 2.5e-3, higher SH
2.5e-3/20; the SH degree grows by one every ``sh_degree_interval`` steps. ``scene_scale`` is 1.1 x the largest
distance of a camera centre from the cameras' mean, as simple_trainer computes it. Gradients live in buffers zeroed
after each step, so a parameter the render does not use yet (higher SH coefficients at degree 0) gets a zero
gradient and every parameter's Adam step count is the fit's.

On CUDA the step is: gsplat's rasterisation (eager: it waits for the device once per call to size its tile lists)
with RGB colours at SH degree 0 (``rgb_colors``: the colours gsplat's SH kernel would compute, one kernel fewer),
then the loss and its gradient to the rendered images replayed as one CUDA graph (``loss_mode``), and the Adam
update, the means' learning-rate decay and the gradient reset replayed as another (``adam_mode``); the loss's SSIM
blurs with banded-matrix products on CUDA (:func:`glimpse3d_core.imaging.ssim`). The eager loop is launch-bound (on
an H200: 2.7 ms of kernels in an 8 ms step, ~200 launches); bare loop on an H200, 20k Gaussians, 4 views of 256²:
470.1 it/s with these defaults, 222.9 with the eager loss, 402.7 with gsplat's SH colours, 169.1 as before issue 19
(research/results/gpu_speed.md, third round; 20 ms of graph capture per fit). ``torch.compile`` of the loss stays
opt-in (a minute of compilation per process). Apart from gsplat's wait, nothing in the loop reads a value back from
the device.

Densification uses gsplat's ``DefaultStrategy`` (clone/split/prune/opacity reset) with its thresholds and a schedule
shortened to the number of iterations; it needs the rasteriser's ``info`` (``means2d`` with gradient, ``radii``,
``width``, ``height``, ``n_cameras``), which both render backends provide. ``densify=False`` keeps the Gaussian count
fixed (the CPU "fast" preset, where every extra Gaussian costs time).

Deterministic under ``seed`` on CPU (view sampling from a seeded generator; no other randomness). gsplat's CUDA
backward accumulates with atomics, so CUDA runs agree only to floating-point rounding.
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from glimpse3d_core.failpoints import failpoint
from glimpse3d_core.imaging import resize, ssim
from glimpse3d_core.render import rasterize, resolve_backend
from glimpse3d_core.render.gsplat_backend import gsplat_rasterization
from glimpse3d_core.render.sh import sh_to_rgb
from glimpse3d_core.types import CameraRig, Gaussians, ViewSet

ADAM_EPS = 1e-15
SCENE_SCALE_MARGIN = 1.1
NEAR, FAR = 0.01, 100.0
"""Clipping planes of the fitting renders (:func:`glimpse3d_core.render.rasterize`'s defaults)."""
LossMode = Literal["eager", "cuda_graph", "compile", "compile_cudagraphs", "compile_autotune"]
AdamMode = Literal["per_group", "single", "cuda_graph"]
COMPILE_MODES = {"compile": "default", "compile_cudagraphs": "reduce-overhead",
                 "compile_autotune": "max-autotune-no-cudagraphs"}
"""``torch.compile`` mode of each compiled ``loss_mode``."""


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
    fused_adam: bool = Field(True, description="Adam's fused CUDA kernel (one launch per parameter group; CUDA only; "
                             "the cuda_graph Adam is always fused)")
    adam_mode: AdamMode = Field("cuda_graph", description="per_group: one Adam per parameter; single: one Adam with "
                                "a group per parameter; cuda_graph: single, its step, the means' learning-rate decay "
                                "and the gradient reset replayed as one CUDA graph (CUDA only; single elsewhere)")
    loss_mode: LossMode = Field("cuda_graph", description="eager; cuda_graph: the loss and its gradient to the "
                                "rendered images replayed as one CUDA graph; compile, compile_cudagraphs, "
                                "compile_autotune: torch.compile in mode default, reduce-overhead, "
                                "max-autotune-no-cudagraphs (all but eager on CUDA only; eager elsewhere)")
    rgb_colors: bool = Field(True, description="at SH degree 0 give gsplat RGB colours (0.5 + C0 * sh0, clamped "
                             "at 0), skipping its SH kernel (the torch backend always does)")


@dataclass
class OptimizeResult:
    """The fitted Gaussians and what the fit did."""

    gaussians: Gaussians
    losses: list[float] = field(default_factory=list)
    """Weighted loss every ``log_every`` steps (first and last step included)."""
    iterations: int = 0
    seconds: float = 0.0
    """Wall time of the loop (compilation and the loss's CUDA-graph capture are in ``setup_seconds``)."""
    setup_seconds: float = 0.0
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
    params = torch.nn.ParameterDict({k: v.detach().float().clone() for k, v in tensors.items()})
    params["shN"].requires_grad_(k > 0)  # degree 0: no higher coefficients to fit
    return params


def learning_rates(config: OptimizeConfig, scale: float) -> dict[str, float]:
    """Initial learning rate of each parameter (the means' scaled by ``scale``, the scene scale)."""
    return {"means": config.lr_means * scale, "quats": config.lr_quats, "scales": config.lr_scales,
            "opacities": config.lr_opacities, "sh0": config.lr_sh0, "shN": config.lr_shN}


@dataclass
class _GroupOptimizer:
    """What gsplat's densification strategy touches of "the optimizer of one parameter" (it expects one Adam per
    parameter): that parameter's group of the shared Adam and the shared state, which it edits in place."""

    param_groups: list[dict]
    state: dict


class FitAdam:
    """Adam over the trainable tensors of ``params`` with a learning rate each (``lrs``, eps 1e-15); the means' rate
    is multiplied by ``gamma`` after every step. ``config.adam_mode``: ``per_group`` one Adam per parameter,
    ``single`` one Adam with a group per parameter, ``cuda_graph`` (CUDA; ``single`` elsewhere) the single Adam
    built capturable, its step replayed from a CUDA graph.

    Gradients are preallocated zeros that backward accumulates into and :meth:`step` zeroes again, so their
    addresses stay fixed. The graph is captured after a step run eagerly, and again after any step in which
    the parameters were replaced (densification); such a step runs eagerly too, and Adam skips the replaced
    parameters in it (they have no gradient yet), as without graphs.
    """

    def __init__(self, params: torch.nn.ParameterDict, lrs: dict[str, float], gamma: float, config: OptimizeConfig):
        device = params["means"].device
        cuda = device.type == "cuda"
        self.mode = mode = "single" if config.adam_mode == "cuda_graph" and not cuda else config.adam_mode
        self.graphed = mode == "cuda_graph"
        fused = self.graphed or (config.fused_adam and cuda)
        self.names = [name for name, p in params.items() if p.requires_grad]
        self.groups = [{"params": [params[name]], "lr": lrs[name], "name": name} for name in self.names]
        means = self.groups[self.names.index("means")]
        if self.graphed:  # a tensor, so that the captured decay updates it in place
            means["lr"] = torch.tensor(means["lr"], dtype=torch.float32, device=device)
        self.means_group, self.gamma = means, gamma
        if mode == "per_group":
            self.optimizers = [torch.optim.Adam([group], eps=ADAM_EPS, fused=fused) for group in self.groups]
        else:
            self.optimizers = [torch.optim.Adam(self.groups, eps=ADAM_EPS, fused=fused, capturable=self.graphed)]
        self._ensure_gradients()
        self._graph: torch.cuda.CUDAGraph | None = None
        self._graphed_params: list[torch.Tensor] = []

    def per_parameter(self) -> dict[str, torch.optim.Optimizer | _GroupOptimizer]:
        """``{name: optimizer of that parameter alone}``, the form gsplat's strategies expect."""
        if self.mode == "per_group":
            return dict(zip(self.names, self.optimizers, strict=True))
        state = self.optimizers[0].state
        return {name: _GroupOptimizer([group], state) for name, group in zip(self.names, self.groups, strict=True)}

    def _parameters_now(self) -> list[torch.Tensor]:
        return [group["params"][0] for group in self.groups]

    def _ensure_gradients(self) -> None:
        for p in self._parameters_now():
            if p.grad is None:
                p.grad = torch.zeros_like(p)

    def _update(self) -> None:
        for opt in self.optimizers:
            opt.step()
        self.means_group["lr"] *= self.gamma  # a float, or in place on the graph's tensor
        grads = [p.grad for p in self._parameters_now() if p.grad is not None]  # none just after densification
        if grads:
            torch._foreach_zero_(grads)  # one launch

    def step(self) -> None:
        """Apply the accumulated gradients, decay the means' rate, zero the gradients."""
        current = self._parameters_now()
        if self._graph is not None and all(a is b for a, b in zip(current, self._graphed_params, strict=True)):
            self._graph.replay()
            return
        with warnings.catch_warnings():  # capturable Adam stepping outside a capture warns that it is slower
            warnings.filterwarnings("ignore", message=".*capturable=True.*")
            self._update()
        self._ensure_gradients()
        if self.graphed:
            self._graph = None  # release the old graph's memory before capturing the new one
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._update()
            self._graph, self._graphed_params = graph, current


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


def gsplat_colors(sh0: torch.Tensor, shN: torch.Tensor | None, degree: int,
                  rgb: bool) -> tuple[torch.Tensor, int | None]:
    """``(colors, sh_degree)`` for ``gsplat.rasterization`` from SH coefficients ``sh0`` [N,1,3] and ``shN``
    [N,K,3] (None or K = 0: none): with ``rgb`` at degree 0 the RGB colours [N,3] that gsplat's SH kernel would
    compute (``0.5 + C0 * sh0``, clamped at 0) and ``None``; otherwise the coefficients up to ``degree``."""
    if rgb and degree == 0:
        return sh_to_rgb(sh0, None, 0), None
    if shN is None or shN.shape[1] == 0:
        return sh0, degree
    return torch.cat([sh0, shN], dim=1)[:, :(degree + 1) ** 2], degree


def _renderer(device: torch.device, rgb_colors: bool):
    """The rasteriser call of the loop, returning (rgb over black, alpha, info). On CPU :func:`rasterize` itself;
    on CUDA ``gsplat.rasterization`` directly (the parameterisation of
    :func:`~glimpse3d_core.render.gsplat_backend.rasterize_gsplat`, colour only: the loss needs no depth;
    colours by :func:`gsplat_colors`), since :func:`rasterize` validates every tensor for NaN on each call (a
    host-device sync per tensor); :func:`run` validates its inputs once instead."""
    if resolve_backend("auto", device) != "gsplat":
        def torch_render(g, viewmats, Ks, w, h, degree):
            out = rasterize(g, viewmats, Ks, w, h, sh_degree=degree)
            return out.rgb, out.alpha, out.info

        return torch_render

    def gsplat_render(g, viewmats, Ks, w, h, degree):
        colors, sh_degree = gsplat_colors(g.sh0, g.shN, degree, rgb_colors)
        rgb, alphas, info = gsplat_rasterization()(
            g.means, g.quats, g.log_scales.exp(), torch.sigmoid(g.opacity_logits), colors, viewmats, Ks, w, h,
            near_plane=NEAR, far_plane=FAR, sh_degree=sh_degree, render_mode="RGB", packed=False)
        return rgb, alphas[..., 0], info

    return gsplat_render


def fit_loss(rgb: torch.Tensor, alpha: torch.Tensor, target_rgb: torch.Tensor, target_alpha: torch.Tensor,
             weights: torch.Tensor, *, background: float, ssim_lambda: float, alpha_lambda: float) -> torch.Tensor:
    """The weighted mean over V views of ``(1 - ssim_lambda) * L1 + ssim_lambda * (1 - SSIM) + alpha_lambda *
    L1(alpha)``: ``rgb`` [V,H,W,3] is the render over black (premultiplied), composited here on the uniform grey
    ``background``; ``target_rgb`` is already composited on it; ``alpha``, ``target_alpha`` [V,H,W];
    ``weights`` [V]."""
    out = rgb + (1.0 - alpha[..., None]) * background
    l1 = (out - target_rgb).abs().flatten(1).mean(1)
    dssim = 1.0 - ssim(out, target_rgb)
    alpha_l1 = (alpha - target_alpha).abs().flatten(1).mean(1)
    per_view = (1.0 - ssim_lambda) * l1 + ssim_lambda * dssim + alpha_lambda * alpha_l1
    return (per_view * weights).sum() / weights.sum()


@functools.cache
def _compiled_fit_loss(mode: str) -> Callable[..., torch.Tensor]:
    """:func:`fit_loss` through ``torch.compile`` in ``mode`` (one per process and mode: it compiles once per
    image size and view count, and its inductor caches on disk make a later process cheaper)."""
    return torch.compile(fit_loss, mode=mode, fullgraph=True, dynamic=False)


class StepLoss:
    """The fit's loss as ``loss(rgb, alpha, idx)``: renders (over black) of the views ``idx`` [V] against their
    targets, which are composited on the background once, here, and gathered per call; :func:`fit_loss` runs as
    ``config.loss_mode`` says (anything but ``eager`` on CUDA only). Compilation (warmed up on zeros) and graph
    capture happen here, timed as ``setup_seconds``. With ``cuda_graph`` the call computes the gradients too,
    and each call's backward must run before the next call."""

    WARMUP = 3
    """Calls (with backward) before capture, and to trigger compilation."""

    def __init__(self, target_rgb: torch.Tensor, target_alpha: torch.Tensor, weights: torch.Tensor,
                 config: OptimizeConfig, views: int):
        start = time.perf_counter()
        a = target_alpha[..., None]
        self.target_rgb = target_rgb * a + config.background * (1 - a)
        self.target_alpha, self.weights = target_alpha, weights
        self.terms = {"background": config.background, "ssim_lambda": config.ssim_lambda,
                      "alpha_lambda": config.alpha_lambda}
        self.mode = config.loss_mode if target_rgb.is_cuda else "eager"
        self._fn = _compiled_fit_loss(COMPILE_MODES[self.mode]) if self.mode in COMPILE_MODES else fit_loss
        shape = (views, *target_rgb.shape[1:3])
        if self.mode == "cuda_graph":
            self._graph = _LossGraph(self._gathered, shape, target_rgb.device)
        elif self.mode != "eager":
            for _ in range(self.WARMUP):
                rgb, alpha, idx = _zero_inputs(shape, target_rgb.device)
                self(rgb, alpha, idx).backward()
        if target_rgb.is_cuda:
            torch.cuda.synchronize(target_rgb.device)
        self.setup_seconds = time.perf_counter() - start

    def _gathered(self, rgb: torch.Tensor, alpha: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return self._fn(rgb, alpha, self.target_rgb[idx], self.target_alpha[idx], self.weights[idx], **self.terms)

    def __call__(self, rgb: torch.Tensor, alpha: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        if self.mode == "cuda_graph":
            return _ReplayedLoss.apply(rgb, alpha, idx, self._graph)
        if self.mode == "compile_cudagraphs":
            torch.compiler.cudagraph_mark_step_begin()
        return self._gathered(rgb, alpha, idx)


def _zero_inputs(shape: tuple[int, int, int], device: torch.device):
    """Zero renders (rgb, alpha, both requiring grad) and view indices for ``shape`` = (V, H, W)."""
    rgb = torch.zeros(*shape, 3, device=device, requires_grad=True)
    alpha = torch.zeros(*shape, device=device, requires_grad=True)
    return rgb, alpha, torch.zeros(shape[0], dtype=torch.long, device=device)


class _LossGraph:
    """``loss(rgb, alpha, idx)`` and its gradient to ``rgb`` and ``alpha``, captured as one CUDA graph on static
    input buffers (after warm-up calls on a side stream, as CUDA-graph capture requires)."""

    def __init__(self, loss: Callable[..., torch.Tensor], shape: tuple[int, int, int], device: torch.device):
        self.rgb, self.alpha, self.idx = _zero_inputs(shape, device)

        def body():
            value = loss(self.rgb, self.alpha, self.idx)
            return (value.detach(), *torch.autograd.grad(value, (self.rgb, self.alpha)))

        with torch.cuda.device(device):
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(StepLoss.WARMUP):
                    body()
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.value, self.grad_rgb, self.grad_alpha = body()

    def replay(self, rgb: torch.Tensor, alpha: torch.Tensor, idx: torch.Tensor) -> None:
        with torch.no_grad():
            self.rgb.copy_(rgb)
            self.alpha.copy_(alpha)
            self.idx.copy_(idx)
        self.graph.replay()


class _ReplayedLoss(torch.autograd.Function):
    """Autograd face of a :class:`_LossGraph`: forward replays it (loss and gradients), backward hands back the
    gradients times the incoming one."""

    @staticmethod
    def forward(ctx, rgb, alpha, idx, graph: _LossGraph):
        graph.replay(rgb, alpha, idx)
        ctx.graph = graph
        return graph.value.clone()  # the buffer is overwritten by the next replay

    @staticmethod
    def backward(ctx, grad):
        return ctx.graph.grad_rgb * grad, ctx.graph.grad_alpha * grad, None, None


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
    step_viewmats, step_Ks = viewmats[batches], Ks[batches]  # [iterations, V, ...]: a step takes a view of them
    if not gaussians.is_finite():
        raise ValueError("optimize: the initial Gaussians contain NaN or inf")
    render = _renderer(device, config.rgb_colors)

    with torch.cuda.device(device) if device.type == "cuda" else nullcontext():
        scale = scene_scale(views.rig)
        params = _parameters(gaussians, config.sh_degree, device)
        decay = config.lr_means_final ** (1.0 / max(config.iterations, 1))
        adam = FitAdam(params, learning_rates(config, scale), decay, config)
        optimizers = adam.per_parameter()
        loss_fn = StepLoss(target_rgb, target_alpha, weights, config, batches.shape[1])
        strategy = _strategy(config) if config.densify else None
        state = strategy.initialize_state(scene_scale=scale) if strategy else None

        result = OptimizeResult(gaussians, num_initial=len(gaussians), setup_seconds=loss_fn.setup_seconds)
        logged: list[tuple[int, torch.Tensor]] = []  # read after the loop: no host-device sync inside it
        start = time.perf_counter()
        for step in range(config.iterations):
            rgb, alpha, info = render(_to_render(params), step_viewmats[step], step_Ks[step], rig.width, rig.height,
                                      min(step // config.sh_degree_interval, config.sh_degree))
            loss = loss_fn(rgb, alpha, batches[step])
            if strategy:
                strategy.step_pre_backward(params, optimizers, state, step, info)
            loss.backward()
            if strategy:
                strategy.step_post_backward(params, optimizers, state, step, info, packed=False)
            adam.step()
            if step == config.iterations // 2:
                failpoint("optimize.midway")
            if step % config.log_every == 0 or step == config.iterations - 1:
                logged.append((step, loss.detach().clone()))  # compiled with CUDA graphs, a replay reuses it
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
