"""Pieces shared by the rasteriser backends: the error type and the expected-depth rule."""

from __future__ import annotations

import torch

DEPTH_ALPHA_MIN = 1e-4
"""Expected depth is reported only where the accumulated opacity exceeds this; elsewhere it is 0."""


class RenderInputError(ValueError):
    """Inputs the rasteriser cannot render (wrong shapes, NaN/Inf values, impossible image size)."""


def expected_depth(depth_sum: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``sum(w_i z_i) / alpha`` where ``alpha > DEPTH_ALPHA_MIN``, else 0 (gradient-safe division)."""
    covered = alpha > DEPTH_ALPHA_MIN
    return torch.where(covered, depth_sum / torch.where(covered, alpha, torch.ones_like(alpha)), 0.0)
