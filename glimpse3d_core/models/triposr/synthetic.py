"""An analytic triplane field (planes + hand-set decoder weights) whose surface is a known ellipsoid.

Used by tests (plane/axis conventions, mesh orientation, frames) and by the GPU benchmark (marching cubes on
a smooth, object-like surface through the full-size decoder; random weights give noise instead).

Construction, with q = point / radius in [-1, 1]³ and Q = (q_x/a)² + (q_y/b)² + (q_z/c)²: channel 0 of each
plane holds half of the two squared terms of its axes (xy, xz, yz), so the concatenated features sum to Q;
the decoder's first layer computes s (1 - Q), the hidden SiLU layers pass it on (SiLU is increasing above
-1.28, which ``s`` guarantees), and the last layer turns it into density = ``threshold`` exactly where Q = 1,
higher inside. Colour is constant.
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


def ellipsoid_field(
    config: TripoSRConfig,
    semi_axes: tuple[float, float, float],
    color: tuple[float, float, float] = (0.5, 0.5, 0.5),
    threshold: float = DENSITY_THRESHOLD,
) -> tuple[NeRFDecoder, torch.Tensor]:
    """(decoder, planes [3, C, 2P, 2P]) for ``config`` whose density crosses ``threshold`` on the ellipsoid of
    ``semi_axes`` (in units of the renderer radius, each <= 0.7 so that the zero padding beyond the planes'
    edge stays outside). Needs concatenated features and SiLU."""
    if config.renderer.feature_reduction != "concat" or config.decoder.activation != "silu":
        raise ValueError("the analytic field needs feature_reduction 'concat' and SiLU activations")
    if not all(0.0 < a <= 0.7 for a in semi_axes):
        raise ValueError(f"semi_axes must lie in (0, 0.7], got {semi_axes}")
    channels, size = config.post_processor.out_channels, 2 * config.tokenizer.plane_size
    coords = (torch.arange(size) * 2 + 1) / size - 1  # pixel centres, align_corners=False
    squares = [coords**2 / a**2 for a in semi_axes]
    planes = torch.zeros(3, channels, size, size)
    for plane, (u, v) in enumerate(PLANE_AXES):
        planes[plane, 0] = 0.5 * (squares[u][None, :] + squares[v][:, None])
    q_max = sum(1.0 / a**2 for a in semi_axes)
    scale = -SILU_MONOTONE_FROM / max(q_max - 1.0, 1.0)

    decoder = NeRFDecoder(config.decoder)
    linears = [m for m in decoder.layers if isinstance(m, nn.Linear)]
    first, *hidden, last = linears
    with torch.no_grad():
        for layer in linears:
            layer.weight.zero_()
            layer.bias.zero_()
        first.weight[0, [0, channels, 2 * channels]] = -scale
        first.bias[0] = scale
        for layer in hidden:
            layer.weight[0, 0] = HIDDEN_GAIN
        last.weight[0, 0] = 1.0
        centre = decoder(torch.zeros(1, config.decoder.in_channels))[0].item()  # last hidden unit at Q = 0
        last.weight[0, 0] = CENTRE_LOG_RATIO / centre
        last.bias[0] = math.log(threshold) - config.renderer.density_bias
        last.bias[1:] = torch.logit(torch.tensor(color))
    return decoder, planes
