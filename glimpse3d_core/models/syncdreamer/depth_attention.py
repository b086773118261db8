"""SyncDreamer's depth-wise attention: every UNet pixel attends over the D depth samples of its own frustum ray.

The context is the target view's frustum feature volume [B, C, D, H, W] at the UNet feature map's resolution; the
query is the feature map [B, dim, H, W]. Softmax runs over D only, so there is no attention across pixels.
"""

from __future__ import annotations

import torch
from torch import nn

from glimpse3d_core.models.syncdreamer.layers import GroupNorm32


class DepthAttention(nn.Module):
    """``heads`` heads of width ``dim_head``; 1x1 convs (2D for the query, 3D for the keys/values), no biases."""

    def __init__(self, query_dim: int, context_dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads, self.dim_head = heads, dim_head
        self.scale = dim_head**-0.5
        self.to_q = nn.Conv2d(query_dim, inner, 1, bias=False)
        self.to_k = nn.Conv3d(context_dim, inner, 1, bias=False)
        self.to_v = nn.Conv3d(context_dim, inner, 1, bias=False)
        self.to_out = nn.Conv2d(inner, query_dim, 1, bias=False)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        d = context.shape[2]
        q = self.to_q(x).reshape(b, self.heads, self.dim_head, h, w)
        k = self.to_k(context).reshape(b, self.heads, self.dim_head, d, h, w)
        v = self.to_v(context).reshape(b, self.heads, self.dim_head, d, h, w)
        sim = torch.einsum("bnchw,bncdhw->bndhw", q, k) * self.scale
        weights = sim.float().softmax(dim=2).to(v.dtype)
        out = torch.einsum("bndhw,bncdhw->bnchw", weights, v)
        return self.to_out(out.reshape(b, self.heads * self.dim_head, h, w))


class DepthTransformer(nn.Module):
    """Residual block around :class:`DepthAttention` (``middle_conditions`` / ``output_conditions.N``).

    Inner width = heads * context_channels/2. Sequential indices follow the checkpoint: ``proj_in.{0 conv,1 norm}``,
    ``proj_context.{0 conv,1 norm}``, ``proj_out.{0 norm,2 conv,3 norm,5 conv}``.
    """

    def __init__(self, channels: int, context_dim: int, heads: int, norm_groups: int) -> None:
        super().__init__()
        dim_head = context_dim // 2
        inner = heads * dim_head
        self.proj_in = nn.Sequential(
            nn.Conv2d(channels, inner, 1), GroupNorm32(norm_groups, inner), nn.SiLU()
        )
        self.proj_context = nn.Sequential(
            nn.Conv3d(context_dim, context_dim, 1, bias=False), GroupNorm32(norm_groups, context_dim), nn.ReLU()
        )
        self.depth_attn = DepthAttention(inner, context_dim, heads, dim_head)
        self.proj_out = nn.Sequential(
            GroupNorm32(norm_groups, inner),
            nn.ReLU(),
            nn.Conv2d(inner, inner, 3, padding=1, bias=False),
            GroupNorm32(norm_groups, inner),
            nn.ReLU(),
            nn.Conv2d(inner, channels, 3, padding=1, bias=False),
        )

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        h = self.depth_attn(self.proj_in(x), self.proj_context(context))
        return self.proj_out(h) + x
