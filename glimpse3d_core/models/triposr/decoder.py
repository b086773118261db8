"""TripoSR's NeRF MLP decoder (``NeRFMLP``): triplane features -> raw density and colour features.

``layers`` is one Sequential [Linear, act, (Linear, act) x (n_hidden_layers - 1), Linear(-> 4)], so the
checkpoint's Linear layers sit at even indices 0, 2, ..., 2 * n_hidden_layers. Output channel 0 is the raw
density, 1:4 the raw colour; the renderer applies the activations.
"""

from __future__ import annotations

import torch
from torch import nn

from glimpse3d_core.models.triposr.config import DecoderConfig

NUM_OUTPUTS = 4
_ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU}


class NeRFDecoder(nn.Module):
    """features [..., in_channels] -> (raw density [...], raw colour [..., 3])."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        act = _ACTIVATIONS[config.activation]
        layers: list[nn.Module] = [nn.Linear(config.in_channels, config.n_neurons, bias=config.bias), act()]
        for _ in range(config.n_hidden_layers - 1):
            layers += [nn.Linear(config.n_neurons, config.n_neurons, bias=config.bias), act()]
        layers.append(nn.Linear(config.n_neurons, NUM_OUTPUTS, bias=config.bias))
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.layers(features)
        return out[..., 0], out[..., 1:NUM_OUTPUTS]
