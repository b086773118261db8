"""Triplane token layout: the learned initial tokens and the upsampler that turns tokens into feature planes.

Token order: the 3 planes (xy, xz, yz of the TripoSR frame, see :mod:`.renderer`) one after the other, each
row-major over its ``plane_size`` x ``plane_size`` grid: tokens [B, C, 3 * P * P] <-> planes [B, 3, C, P, P].
"""

from __future__ import annotations

import torch
from torch import nn

from glimpse3d_core.models.triposr.config import TriplaneTokenizerConfig, UpsamplerConfig

NUM_PLANES = 3


class TriplaneTokenizer(nn.Module):
    """``Triplane1DTokenizer``: a learned [3, C, P, P] parameter, flattened to tokens and back."""

    def __init__(self, config: TriplaneTokenizerConfig) -> None:
        super().__init__()
        self.plane_size = config.plane_size
        self.num_channels = config.num_channels
        shape = (NUM_PLANES, config.num_channels, config.plane_size, config.plane_size)
        self.embeddings = nn.Parameter(torch.randn(shape) / config.num_channels**0.5)

    def forward(self, batch_size: int) -> torch.Tensor:
        """Initial tokens [B, C, 3 * P * P]."""
        tokens = self.embeddings.permute(1, 0, 2, 3).reshape(self.num_channels, -1)
        return tokens.unsqueeze(0).expand(batch_size, -1, -1)

    def detokenize(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, C, 3 * P * P] -> planes [B, 3, C, P, P]."""
        b, c, n = tokens.shape
        p = self.plane_size
        if c != self.num_channels or n != NUM_PLANES * p * p:
            raise ValueError(f"tokens {tuple(tokens.shape)} do not match ({self.num_channels}, {NUM_PLANES * p * p})")
        return tokens.reshape(b, c, NUM_PLANES, p, p).permute(0, 2, 1, 3, 4)


class TriplaneUpsampler(nn.Module):
    """``TriplaneUpsampleNetwork``: planes [B, 3, Ci, P, P] -> [B, 3, Co, 2P, 2P] (2x2 stride-2 transposed conv)."""

    def __init__(self, config: UpsamplerConfig) -> None:
        super().__init__()
        self.upsample = nn.ConvTranspose2d(config.in_channels, config.out_channels, kernel_size=2, stride=2)

    def forward(self, planes: torch.Tensor) -> torch.Tensor:
        b, n = planes.shape[:2]
        up = self.upsample(planes.flatten(0, 1))
        return up.reshape(b, n, *up.shape[1:])
