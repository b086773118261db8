"""Rasterise 3D Gaussians into RGB, alpha and depth for a batch of cameras.

One entry point, :func:`rasterize`, with two backends that produce the same images (checked on a GPU by
``research/gpu_render_check.py``):

* ``"gsplat"``: gsplat's CUDA ``rasterization`` (classic 3DGS, RGB+ED); needs CUDA tensors.
* ``"torch"``: our pure-PyTorch differentiable EWA splatting (:mod:`.torch_backend`), the reference; any device.

Conventions: Gaussians as in :mod:`glimpse3d_core.types` (quaternions normalised here); ``viewmats`` [C,4,4]
OpenCV world-to-camera, ``Ks`` [C,3,3] in pixels, pixel centres at integer + 0.5. Colours come from the SH
coefficients seen from each camera (direction camera centre -> mean), ``max(0, 0.5 + SH)``. Depth is the camera
z of the Gaussians' means, alpha-weighted: ``sum(w_i z_i) / alpha`` where alpha > 1e-4, else 0 (gsplat "ED").
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from glimpse3d_core.render.common import DEPTH_ALPHA_MIN, RenderInputError
from glimpse3d_core.render.gsplat_backend import gsplat_available, gsplat_rasterization, rasterize_gsplat
from glimpse3d_core.render.sh import MAX_SH_DEGREE
from glimpse3d_core.render.torch_backend import TorchRasterConfig, rasterize_torch
from glimpse3d_core.types import CameraRig, Gaussians, ViewSet

Backend = Literal["auto", "gsplat", "torch"]
MAX_IMAGE_SIDE = 8192
"""Largest image width/height accepted (guards against a typo allocating terabytes)."""
GSPLAT_ARGS_SET_HERE = frozenset(
    {
        "means",
        "quats",
        "scales",
        "opacities",
        "colors",
        "viewmats",
        "Ks",
        "width",
        "height",
        "near_plane",
        "far_plane",
        "sh_degree",
        "render_mode",
        "backgrounds",
    }
)
"""gsplat.rasterization arguments that :func:`rasterize` fills in itself."""

__all__ = [
    "DEPTH_ALPHA_MIN",
    "Backend",
    "RenderInputError",
    "RenderOutput",
    "TorchRasterConfig",
    "rasterize",
    "render_views",
    "resolve_backend",
]


@dataclass
class RenderOutput:
    """Rendered views. ``rgb`` [C,H,W,3] composited over ``background`` (None: over black, i.e. premultiplied);
    ``alpha`` [C,H,W] accumulated opacity; ``depth`` [C,H,W] expected camera z (0 where alpha <= 1e-4);
    ``info`` backend metadata (for gsplat its own ``info``, as gsplat.strategy densification reads it)."""

    rgb: torch.Tensor
    alpha: torch.Tensor
    depth: torch.Tensor
    info: dict


def resolve_backend(backend: Backend, device: torch.device | str) -> str:
    """The concrete backend: ``"auto"`` is gsplat for CUDA tensors when gsplat imports, otherwise torch.

    Naming ``"gsplat"`` for non-CUDA tensors or without gsplat installed is an error.
    """
    device = torch.device(device)
    if backend == "auto":
        return "gsplat" if device.type == "cuda" and gsplat_available() else "torch"
    if backend == "gsplat":
        if device.type != "cuda":
            raise RenderInputError(f"the gsplat backend needs CUDA tensors, got device {device}; use backend='torch'")
        if not gsplat_available():
            raise RenderInputError("the gsplat backend needs the gsplat package (pip install 'glimpse3d[gpu]')")
        return "gsplat"
    if backend == "torch":
        return "torch"
    raise RenderInputError(f"unknown render backend {backend!r}; choose auto, gsplat or torch")


def _check_inputs(g: Gaussians, viewmats: torch.Tensor, Ks: torch.Tensor, width: int, height: int) -> None:
    if not isinstance(g, Gaussians):
        raise RenderInputError(f"expected Gaussians, got {type(g).__name__}")
    if viewmats.ndim != 3 or viewmats.shape[1:] != (4, 4):
        raise RenderInputError(f"viewmats must be [C,4,4], got {tuple(viewmats.shape)}")
    if Ks.shape != (viewmats.shape[0], 3, 3):
        raise RenderInputError(f"Ks must be [{viewmats.shape[0]},3,3] to match viewmats, got {tuple(Ks.shape)}")
    for name, value in (("width", width), ("height", height)):
        if not isinstance(value, int | np.integer) or not 0 < value <= MAX_IMAGE_SIDE:
            raise RenderInputError(f"{name} must be an integer in 1..{MAX_IMAGE_SIDE}, got {value!r}")
    tensors = {**g.tensors(), "viewmats": viewmats, "Ks": Ks}
    devices = {t.device for t in tensors.values()}
    if len(devices) > 1:
        raise RenderInputError(f"Gaussians and cameras must be on one device, got {sorted(map(str, devices))}")
    finite = torch.stack([torch.isfinite(t).all() for t in tensors.values()]).tolist()  # one device sync
    bad = [name for name, ok in zip(tensors, finite, strict=True) if not ok]
    if bad:
        raise RenderInputError(f"NaN or Inf in the render inputs: {', '.join(bad)}")


def _background(background: torch.Tensor | float | None, like: torch.Tensor) -> torch.Tensor | None:
    """Background as a tensor broadcastable to [C,1,1,3], or None."""
    if background is None:
        return None
    bg = torch.as_tensor(background, dtype=like.dtype, device=like.device)
    if bg.ndim == 0:
        return bg.expand(3)
    if bg.shape == (3,):
        return bg
    if bg.shape == (like.shape[0], 3):
        return bg[:, None, None, :]
    raise RenderInputError(f"background must be a float, [3] or [C,3], got shape {tuple(bg.shape)}")


def rasterize(
    gaussians: Gaussians,
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    width: int,
    height: int,
    *,
    background: torch.Tensor | float | None = None,
    sh_degree: int | None = None,
    backend: Backend = "auto",
    near: float = 0.01,
    far: float = 100.0,
    **backend_kwargs,
) -> RenderOutput:
    """Render ``gaussians`` from C cameras (differentiable w.r.t. every Gaussian tensor).

    ``sh_degree`` caps the SH degree used (default: all of ``gaussians.shN``). ``backend_kwargs`` go to the
    backend: for ``"torch"`` the fields of :class:`TorchRasterConfig` (``tile_size``, ``eps2d``,
    ``radius_clip``, ``chunk_pairs``); for ``"gsplat"`` any ``gsplat.rasterization`` keyword.
    """
    _check_inputs(gaussians, viewmats, Ks, width, height)
    degree = gaussians.sh_degree if sh_degree is None else sh_degree
    if not 0 <= degree <= min(gaussians.sh_degree, MAX_SH_DEGREE):
        raise RenderInputError(f"sh_degree {degree} is not available: the Gaussians have degree {gaussians.sh_degree}")
    if not 0 < near < far:
        raise RenderInputError(f"need 0 < near < far, got near={near}, far={far}")
    name = resolve_backend(backend, viewmats.device)
    if name == "gsplat":
        allowed = set(inspect.signature(gsplat_rasterization()).parameters) - GSPLAT_ARGS_SET_HERE
        unknown = set(backend_kwargs) - allowed
        if unknown:
            raise RenderInputError(f"unknown option for the gsplat backend: {sorted(unknown)}")
        rgb, alpha, depth, info = rasterize_gsplat(
            gaussians, viewmats, Ks, width, height, sh_degree=degree, near=near, far=far, **backend_kwargs
        )
    else:
        try:
            config = TorchRasterConfig(**backend_kwargs)
        except TypeError as exc:
            raise RenderInputError(f"unknown option for the torch backend: {exc}") from None
        rgb, alpha, depth, info = rasterize_torch(
            gaussians, viewmats, Ks, width, height, sh_degree=degree, near=near, far=far, config=config
        )
    bg = _background(background, rgb)
    if bg is not None:
        rgb = rgb + (1.0 - alpha[..., None]) * bg
    return RenderOutput(rgb=rgb, alpha=alpha, depth=depth, info=info)


def render_views(
    gaussians: Gaussians,
    rig: CameraRig,
    *,
    background: torch.Tensor | float | None = None,
    backend: Backend = "auto",
) -> ViewSet:
    """Render every camera of ``rig`` without gradients into a :class:`ViewSet` (numpy float32).

    ``ViewSet.rgb`` is *straight* colour: the render over black divided by alpha where alpha > 1e-4 (0
    elsewhere), clipped to [0,1], so ``ViewSet.composite(bg)`` reproduces the render over ``bg``. ``background``
    is accepted for symmetry with :func:`rasterize` but cannot change straight colour; it is ignored.
    """
    device = gaussians.means.device
    viewmats, Ks = rig.torch(device)
    with torch.no_grad():
        out = rasterize(gaussians.detach(), viewmats, Ks, rig.width, rig.height, backend=backend)
    alpha = out.alpha
    covered = alpha > DEPTH_ALPHA_MIN
    rgb = torch.where(covered[..., None], out.rgb / alpha.clamp_min(DEPTH_ALPHA_MIN)[..., None], 0.0).clamp(0, 1)
    return ViewSet(
        rig=rig,
        rgb=rgb.cpu().numpy().astype(np.float32),
        alpha=alpha.cpu().numpy().astype(np.float32),
        depth=out.depth.cpu().numpy().astype(np.float32),
    )
