"""CUDA rasteriser: a thin wrapper over ``gsplat.rasterization`` (imported lazily; JIT-compiles on first use)."""

from __future__ import annotations

import torch

from glimpse3d_core.render.common import DEPTH_ALPHA_MIN
from glimpse3d_core.types import Gaussians


def gsplat_available() -> bool:
    """True when gsplat imports (it still needs CUDA tensors to run)."""
    try:
        import gsplat  # noqa: F401
    except ImportError:
        return False
    return True


def gsplat_rasterization():
    """``gsplat.rasterization`` (imported on first use)."""
    from gsplat import rasterization

    return rasterization


def rasterize_gsplat(
    g: Gaussians,
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    width: int,
    height: int,
    *,
    sh_degree: int,
    near: float,
    far: float,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """Render C views with gsplat: (rgb over black [C,H,W,3], alpha [C,H,W], expected depth [C,H,W], gsplat's info).

    ``kwargs`` go to ``gsplat.rasterization`` (e.g. ``packed``, ``absgrad``, ``tile_size``, ``rasterize_mode``);
    by default ``packed=False`` so that ``info`` has the [C,N,...] layout of the PyTorch backend.
    """
    kwargs.setdefault("packed", False)
    n_bases = (sh_degree + 1) ** 2
    colors = torch.cat([g.sh0, g.shN], dim=1)[:, :n_bases]
    out, alphas, info = gsplat_rasterization()(
        means=g.means,
        quats=g.quats,
        scales=g.log_scales.exp(),
        opacities=torch.sigmoid(g.opacity_logits),
        colors=colors,
        viewmats=viewmats,
        Ks=Ks,
        width=width,
        height=height,
        near_plane=near,
        far_plane=far,
        sh_degree=sh_degree,
        render_mode="RGB+ED",
        backgrounds=None,
        **kwargs,
    )
    alpha = alphas[..., 0]
    depth = torch.where(alpha > DEPTH_ALPHA_MIN, out[..., 3], 0.0)
    info["backend"] = "gsplat"
    return out[..., :3], alpha, depth, info
