"""The SD AutoencoderKL as ldm names it (``first_stage_model``): images in [-1, 1] <-> 4-channel latents at 1/8 size.

No attention at any resolution except the single-head attention in the middle blocks; GroupNorm eps 1e-6; the
encoder downsamples with a (0,1,0,1)-padded stride-2 conv, the decoder upsamples nearest ×2 then convolves.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glimpse3d_core.models.syncdreamer.config import VAEConfig
from glimpse3d_core.models.syncdreamer.layers import GroupNorm32

VAE_NORM_EPS = 1e-6
LOGVAR_RANGE = (-30.0, 20.0)


def _norm(channels: int, groups: int) -> GroupNorm32:
    return GroupNorm32(groups, channels, eps=VAE_NORM_EPS)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, groups: int) -> None:
        super().__init__()
        self.norm1 = _norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels, groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions with 1x1-conv projections."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = _norm(channels, groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        q, k, v = (m(y).reshape(b, 1, c, h * w).transpose(2, 3) for m in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v).transpose(2, 3).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution level: ``block`` (ResnetBlocks), ``attn`` (empty here) and an optional resampler."""

    def __init__(self, blocks: list[ResnetBlock], resample: nn.Module | None, resample_name: str) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList()
        self.resample_name = resample_name
        if resample is not None:
            self.add_module(resample_name, resample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.block:
            x = block(x)
        resample = getattr(self, self.resample_name, None)
        return x if resample is None else resample(x)


class Mid(nn.Module):
    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, groups)
        self.attn_1 = AttnBlock(channels, groups)
        self.block_2 = ResnetBlock(channels, channels, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        g, last = cfg.norm_groups, len(cfg.ch_mult) - 1
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        self.down = nn.ModuleList()
        ch = cfg.ch
        for level, mult in enumerate(cfg.ch_mult):
            blocks = []
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResnetBlock(ch, cfg.ch * mult, g))
                ch = cfg.ch * mult
            self.down.append(Level(blocks, Downsample(ch) if level != last else None, "downsample"))
        self.mid = Mid(ch, g)
        self.norm_out = _norm(ch, g)
        self.conv_out = nn.Conv2d(ch, 2 * cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    """``up[i]`` works at level i (``up[0]`` at full resolution); they run from the deepest level up."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        g = cfg.norm_groups
        ch = cfg.ch * cfg.ch_mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, ch, 3, padding=1)
        self.mid = Mid(ch, g)
        levels: list[Level] = []
        for level in reversed(range(len(cfg.ch_mult))):
            blocks = []
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(ResnetBlock(ch, cfg.ch * cfg.ch_mult[level], g))
                ch = cfg.ch * cfg.ch_mult[level]
            levels.insert(0, Level(blocks, Upsample(ch) if level != 0 else None, "upsample"))
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(ch, g)
        self.conv_out = nn.Conv2d(ch, cfg.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class AutoencoderKL(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quant_conv = nn.Conv2d(2 * cfg.z_channels, 2 * cfg.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(cfg.embed_dim, cfg.z_channels, 1)

    def encode_sample(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A sample of the diagonal-Gaussian posterior (mean + std · N(0, 1)) for ``image`` [B,3,H,W] in [-1,1];
        unscaled latents [B, embed_dim, H/8, W/8]."""
        moments = self.quant_conv(self.encoder(image))
        mean, logvar = moments.float().chunk(2, dim=1)
        std = torch.exp(0.5 * logvar.clamp(*LOGVAR_RANGE))
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + std * noise

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Unscaled latents -> images [B,3,H,W] (about [-1, 1], not clamped)."""
        return self.decoder(self.post_quant_conv(z))
