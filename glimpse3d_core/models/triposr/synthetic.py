"""An analytic triplane field (planes + hand-set decoder weights) whose surface is a known ellipsoid.

Used by tests (plane/axis conventions, mesh orientation, frames) and by the GPU benchmark (marching cubes on
a smooth, object-like surface through the full-size decoder; random weights give noise instead).

Construction, with q = point / radius in [-1, 1]³ and Q = (q_x/a)² + (q_y/b)² + (q_z/c)²: channel 0 of each
plane holds half of the two squared terms of its axes (xy, xz, yz), so the concatenated features sum to Q;
the decoder's first layer computes s (1 - Q), the hidden SiLU layers pass it on (SiLU is increasing above
-1.28, which ``s`` guarantees), and the last layer turns it into density = ``threshold`` exactly where Q = 1,
higher inside. Colour is constant. :func:`plane_field` does the same for any per-plane terms (the surface is
Q = f0(q_x, q_y) + f1(q_x, q_z) + f2(q_y, q_z) = 1). Channel 1 of each plane is 1 and enters the first layer with
a large gain and a bias that cancels it, so that where bilinear sampling blends in the zero padding beyond a
plane's edge the point falls outside (without it Q would drop towards 0 there and the border turn "inside").
"""

from __future__ import annotations

import math

import torch
from torch import nn

from glimpse3d_core.models.triposr.config import TripoSRConfig
from glimpse3d_core.models.triposr.decoder import NeRFDecoder
from glimpse3d_core.models.triposr.mesh import DENSITY_THRESHOLD

PLANE_AXES = ((0, 1), (0, 2), (1, 2))
"""Axes of planes 0, 1, 2: (width axis, height axis)."""
HIDDEN_GAIN = 2.0
CENTRE_LOG_RATIO = 5.0
"""log(density at the centre / threshold)."""
SILU_MONOTONE_FROM = -1.2
EDGE_GAIN = 10.0
"""First-layer gain of the in-plane indicator channels (in units of the Q scale)."""


def plane_coords(config: TripoSRConfig) -> torch.Tensor:
    """Normalised coordinates in [-1, 1] of the planes' pixel centres along one side (align_corners=False)."""
    size = 2 * config.tokenizer.plane_size
    return (torch.arange(size) * 2 + 1) / size - 1


def plane_field(
    config: TripoSRConfig,
    terms: torch.Tensor,
    color: tuple[float, float, float] = (0.5, 0.5, 0.5),
    threshold: float = DENSITY_THRESHOLD,
    sharpness: float = CENTRE_LOG_RATIO,
) -> tuple[NeRFDecoder, torch.Tensor]:
    """(decoder, planes) whose density crosses ``threshold`` where the per-plane ``terms`` [3, 2P, 2P] (>= 0,
    plane i over :data:`PLANE_AXES` [i], rows = its second axis) sum to 1, higher where the sum is below 1.
    ``sharpness`` = log(density where the sum is 0 / threshold). Needs concatenated features, SiLU and at least
    two plane channels."""
    if config.renderer.feature_reduction != "concat" or config.decoder.activation != "silu":
        raise ValueError("the analytic field needs feature_reduction 'concat' and SiLU activations")
    channels, size = config.post_processor.out_channels, 2 * config.tokenizer.plane_size
    if channels < 2:
        raise ValueError("the analytic field needs at least 2 plane channels")
    if tuple(terms.shape) != (3, size, size):
        raise ValueError(f"terms must be [3, {size}, {size}], got {tuple(terms.shape)}")
    planes = torch.zeros(3, channels, size, size)
    planes[:, 0] = terms
    planes[:, 1] = 1.0
    q_max = float(terms.amax(dim=(1, 2)).sum())
    scale = -SILU_MONOTONE_FROM / max(q_max - 1.0, 1.0)

    decoder = NeRFDecoder(config.decoder)
    linears = [m for m in decoder.layers if isinstance(m, nn.Linear)]
    first, *hidden, last = linears
    value, indicator = [0, channels, 2 * channels], [1, channels + 1, 2 * channels + 1]
    with torch.no_grad():
        for layer in linears:
            layer.weight.zero_()
            layer.bias.zero_()
        first.weight[0, value] = -scale
        first.weight[0, indicator] = scale * EDGE_GAIN
        first.bias[0] = scale - 3 * scale * EDGE_GAIN
        for layer in hidden:
            layer.weight[0, 0] = HIDDEN_GAIN
        last.weight[0, 0] = 1.0
        inside = torch.zeros(1, config.decoder.in_channels)
        inside[0, indicator] = 1.0
        centre = decoder(inside)[0].item()  # last hidden unit where the terms sum to 0
        last.weight[0, 0] = sharpness / centre
        last.bias[0] = math.log(threshold) - config.renderer.density_bias
        last.bias[1:] = torch.logit(torch.tensor(color))
    return decoder, planes


def ellipsoid_field(
    config: TripoSRConfig,
    semi_axes: tuple[float, float, float],
    color: tuple[float, float, float] = (0.5, 0.5, 0.5),
    threshold: float = DENSITY_THRESHOLD,
) -> tuple[NeRFDecoder, torch.Tensor]:
    """(decoder, planes [3, C, 2P, 2P]) for ``config`` whose density crosses ``threshold`` on the ellipsoid of
    ``semi_axes`` (in units of the renderer radius, each <= 0.7 so that the zero padding beyond the planes'
    edge stays outside). Needs concatenated features and SiLU."""
    if not all(0.0 < a <= 0.7 for a in semi_axes):
        raise ValueError(f"semi_axes must lie in (0, 0.7], got {semi_axes}")
    coords = plane_coords(config)
    squares = [coords**2 / a**2 for a in semi_axes]
    terms = torch.stack([0.5 * (squares[u][None, :] + squares[v][:, None]) for u, v in PLANE_AXES])
    return plane_field(config, terms, color, threshold)
