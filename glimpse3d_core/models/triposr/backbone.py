"""TripoSR's 1D transformer backbone (``Transformer1D``): triplane tokens attend to themselves and to the image.

tokens [B, C, N] -> GroupNorm -> proj_in -> blocks -> proj_out -> + tokens. Each block is pre-norm:
LayerNorm + self-attention, LayerNorm + cross-attention to the DINO tokens, LayerNorm + GEGLU feed-forward
(hidden 4 x inner), each with a residual. Module names follow the checkpoint (diffusers-style ``to_q`` ...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glimpse3d_core.models.triposr.config import BackboneConfig

GROUP_NORM_EPS = 1e-6
FEED_FORWARD_MULT = 4


class Attention(nn.Module):
    """Multi-head (cross-)attention with bias-free q/k/v (``attention_bias``) and a biased output projection.

    ``to_out`` is a ModuleList ``[Linear, Dropout]`` so that the checkpoint's ``to_out.0`` names fit.
    """

    def __init__(self, query_dim: int, context_dim: int, heads: int, head_dim: int, bias: bool) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=bias)
        self.to_k = nn.Linear(context_dim, inner, bias=bias)
        self.to_v = nn.Linear(context_dim, inner, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim), nn.Dropout(0.0)])

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        b, n, _ = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, t.shape[1], self.heads, -1).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.to_q(x)), split(self.to_k(context)), split(self.to_v(context)))
        out = out.transpose(1, 2).reshape(b, n, -1)
        for layer in self.to_out:
            out = layer(out)
        return out


class GEGLU(nn.Module):
    """Linear to 2 x ``dim_out`` then ``value * gelu(gate)`` (value first, gate second)."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """``net`` = [GEGLU, Dropout, Linear] (checkpoint names ``ff.net.0.proj``, ``ff.net.2``)."""

    def __init__(self, dim: int, mult: int = FEED_FORWARD_MULT) -> None:
        super().__init__()
        hidden = dim * mult
        self.net = nn.ModuleList([GEGLU(dim, hidden), nn.Dropout(0.0), nn.Linear(hidden, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class TransformerBlock(nn.Module):
    """Pre-norm self-attention, cross-attention and feed-forward, each with a residual."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        dim, heads, head_dim, bias = (
            config.inner_dim, config.num_attention_heads, config.attention_head_dim, config.attention_bias
        )
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, dim, heads, head_dim, bias)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, config.cross_attention_dim, heads, head_dim, bias)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class Transformer1D(nn.Module):
    """tokens [B, C, N] and image context [B, M, cross_attention_dim] -> tokens [B, C, N]."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(config.norm_num_groups, config.in_channels, eps=GROUP_NORM_EPS, affine=True)
        self.proj_in = nn.Linear(config.in_channels, config.inner_dim)
        self.transformer_blocks = nn.ModuleList([TransformerBlock(config) for _ in range(config.num_layers)])
        self.proj_out = nn.Linear(config.inner_dim, config.in_channels)

    def forward(self, tokens: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.proj_in(self.norm(tokens).transpose(1, 2))
        for block in self.transformer_blocks:
            x = block(x, context)
        return self.proj_out(x).transpose(1, 2) + tokens
