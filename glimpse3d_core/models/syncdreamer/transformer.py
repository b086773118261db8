"""ldm's SpatialTransformer: self-attention over pixels, cross-attention to the conditioning tokens, GEGLU MLP.

Parameter names follow ldm (``norm``, ``proj_in``, ``transformer_blocks.N.{attn1,ff,attn2,norm1..3}``,
``proj_out``) so that the checkpoint loads as it is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glimpse3d_core.models.syncdreamer.layers import GroupNorm32, attention

TRANSFORMER_NORM_EPS = 1e-6
FF_MULT = 4


class CrossAttention(nn.Module):
    """Multi-head attention of ``x`` [B,N,query_dim] over ``context`` [B,M,context_dim] (self-attention when
    context is None); q/k/v projections without bias."""

    def __init__(self, query_dim: int, context_dim: int | None, heads: int, dim_head: int) -> None:
        super().__init__()
        inner = heads * dim_head
        context_dim = query_dim if context_dim is None else context_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        out = attention(self.to_q(x), self.to_k(context), self.to_v(context), self.heads)
        return self.to_out(out)


class GEGLU(nn.Module):
    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU MLP; ``net.1`` is ldm's (inference-time no-op) dropout slot, kept so ``net.2`` keeps its name."""

    def __init__(self, dim: int, mult: int = FF_MULT) -> None:
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Identity(), nn.Linear(dim * mult, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    """Pre-norm block: self-attention, cross-attention to the context, feed-forward, each residual."""

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int) -> None:
        super().__init__()
        self.attn1 = CrossAttention(dim, None, heads, dim_head)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, context_dim, heads, dim_head)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    """Image-shaped transformer: GroupNorm, 1x1 conv in, ``depth`` blocks over the H*W tokens, 1x1 conv out,
    plus the input."""

    def __init__(
        self, channels: int, heads: int, dim_head: int, depth: int, context_dim: int, norm_groups: int
    ) -> None:
        super().__init__()
        inner = heads * dim_head
        self.norm = GroupNorm32(norm_groups, channels, eps=TRANSFORMER_NORM_EPS)
        self.proj_in = nn.Conv2d(channels, inner, 1)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(inner, heads, dim_head, context_dim) for _ in range(depth)
        )
        self.proj_out = nn.Conv2d(inner, channels, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        tokens = self.proj_in(self.norm(x))
        tokens = tokens.flatten(2).transpose(1, 2)
        for block in self.transformer_blocks:
            tokens = block(tokens, context)
        tokens = tokens.transpose(1, 2).reshape(b, -1, h, w)
        return self.proj_out(tokens) + x
