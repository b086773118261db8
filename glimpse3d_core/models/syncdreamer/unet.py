"""The ldm UNet (``model.diffusion_model``) with SyncDreamer's depth-wise attention conditions.

Layout (ldm ``UNetModel``, legacy=False): ``input_blocks`` (a stem conv, then per level ``num_res_blocks`` ResBlocks,
each followed by a SpatialTransformer where the level's downsampling factor is in ``attention_resolutions``, and
a strided-conv Downsample between levels), ``middle_block`` (ResBlock, SpatialTransformer, ResBlock),
``output_blocks`` (per level from the deepest: ``num_res_blocks + 1`` ResBlocks on the concatenated skip, the
same transformers, an Upsample closing every level but the shallowest) and ``out``.

SyncDreamer adds ``middle_conditions`` after the middle block and ``output_conditions[i]`` after every output block
outside the deepest level (with the released sizes: output blocks 3..11). Each is a :class:`DepthTransformer` whose
context is the frustum volume at the resolution the feature map has after that block (after its Upsample).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glimpse3d_core.models.syncdreamer.config import UNetConfig
from glimpse3d_core.models.syncdreamer.depth_attention import DepthTransformer
from glimpse3d_core.models.syncdreamer.layers import GroupNorm32, timestep_embedding
from glimpse3d_core.models.syncdreamer.transformer import SpatialTransformer

TIME_EMBED_MULT = 4


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, plus the projected time embedding, GroupNorm-SiLU-conv; 1x1 conv skip when widths
    differ. ``out_layers.2`` is ldm's dropout slot (identity at inference), kept for the parameter names."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int, norm_groups: int) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(
            GroupNorm32(norm_groups, channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(
            GroupNorm32(norm_groups, out_channels),
            nn.SiLU(),
            nn.Identity(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip_connection = nn.Identity() if channels == out_channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        h = h + self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class UNetBlock(nn.Sequential):
    """ldm's TimestepEmbedSequential: layers applied in turn, each given what it needs."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            else:
                x = layer(x)
        return x


class DepthWiseUNet(nn.Module):
    """Predicts the noise [B,out,h,w] of ``x`` [B,in,h,w] at ``timesteps`` [B] given ``context`` [B,M,context_dim]
    tokens and ``volumes``: {feature-map width: frustum features [B, volume_dims[level], D, width, width]}."""

    def __init__(self, cfg: UNetConfig, volume_dims: tuple[int, ...]) -> None:
        super().__init__()
        mc, groups = cfg.model_channels, cfg.norm_groups
        emb_dim = mc * TIME_EMBED_MULT
        self.model_channels = mc

        def transformer(ch: int) -> SpatialTransformer:
            return SpatialTransformer(ch, cfg.num_heads, ch // cfg.num_heads, cfg.transformer_depth,
                                      cfg.context_dim, groups)

        def condition(ch: int, level: int) -> DepthTransformer:
            return DepthTransformer(ch, volume_dims[level], cfg.depth_attn_heads, cfg.depth_norm_groups)

        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        self.input_blocks = nn.ModuleList([UNetBlock(nn.Conv2d(cfg.in_channels, mc, 3, padding=1))])
        skip_channels = [mc]
        ch, last = mc, len(cfg.channel_mult) - 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, emb_dim, mult * mc, groups)]
                ch = mult * mc
                if 2**level in cfg.attention_resolutions:
                    layers.append(transformer(ch))
                self.input_blocks.append(UNetBlock(*layers))
                skip_channels.append(ch)
            if level != last:
                self.input_blocks.append(UNetBlock(Downsample(ch)))
                skip_channels.append(ch)

        self.middle_block = UNetBlock(
            ResBlock(ch, emb_dim, ch, groups), transformer(ch), ResBlock(ch, emb_dim, ch, groups)
        )
        self.middle_conditions = condition(ch, last)

        self.output_blocks = nn.ModuleList()
        self.output_conditions = nn.ModuleList()
        self.condition_of_block: dict[int, int] = {}
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [ResBlock(ch + skip_channels.pop(), emb_dim, mc * mult, groups)]
                ch = mc * mult
                if 2**level in cfg.attention_resolutions:
                    layers.append(transformer(ch))
                upsamples = level != 0 and i == cfg.num_res_blocks
                if upsamples:
                    layers.append(Upsample(ch))
                if level != last:
                    self.condition_of_block[len(self.output_blocks)] = len(self.output_conditions)
                    self.output_conditions.append(condition(ch, level - 1 if upsamples else level))
                self.output_blocks.append(UNetBlock(*layers))

        self.out = nn.Sequential(GroupNorm32(groups, ch), nn.SiLU(), nn.Conv2d(mc, cfg.out_channels, 3, padding=1))

    def forward(
        self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor, volumes: dict[int, torch.Tensor]
    ) -> torch.Tensor:
        dtype = self.out[2].weight.dtype
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels).to(dtype))
        h, context = x.to(dtype), context.to(dtype)
        skips = []
        for block in self.input_blocks:
            h = block(h, emb, context)
            skips.append(h)
        h = self.middle_block(h, emb, context)
        h = self.middle_conditions(h, volumes[h.shape[-1]])
        for index, block in enumerate(self.output_blocks):
            h = block(torch.cat([h, skips.pop()], dim=1), emb, context)
            if index in self.condition_of_block:
                h = self.output_conditions[self.condition_of_block[index]](h, volumes[h.shape[-1]])
        return self.out(h).to(x.dtype)
