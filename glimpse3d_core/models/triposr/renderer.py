"""Triplane NeRF field and volume renderer (TripoSR ``TriplaneNeRFRenderer``), in the TripoSR frame.

TripoSR frame: x back (towards the input camera), y right, z up; the object lies in the cube
[-radius, radius]³. A point p is scaled to q = p / radius in [-1, 1]³ and sampled (bilinear, zero padding,
``align_corners=False``) from plane 0 at (q_x, q_y), plane 1 at (q_x, q_z), plane 2 at (q_y, q_z) — the first
coordinate indexes the plane's width, the second its height. The features are concatenated (or averaged) and
decoded; density = exp(raw + density_bias), colour = sigmoid(raw) in straight RGB [0,1].

Volume rendering follows the original: rays are clipped to the cube shrunk by 1e-3, rays whose clipped
length is under 0.01 are empty, 128 stratified midpoints, alpha = 1 - exp(-sigma / num_samples) (the step is
the normalised 1/num_samples, not a metric length), composited over white.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from glimpse3d_core.models.triposr.config import RendererConfig
from glimpse3d_core.models.triposr.decoder import NeRFDecoder

BOX_SHRINK = 1e-3
MIN_RAY_LENGTH = 0.01
DIRECTION_EPS = 1e-6
TRANSMITTANCE_EPS = 1e-10
DEFAULT_CHUNK_POINTS = 1 << 18
"""Points decoded per batch: about 0.3 GB of activations at the released widths. TripoSR's CLI used 8192."""


@dataclass
class FieldSample:
    """Decoded field at N points: ``density`` [N] (activated, >= 0) and ``color`` [N,3] straight RGB in [0,1]."""

    density: torch.Tensor
    color: torch.Tensor


@dataclass
class RenderedRays:
    """``rgb`` [R,3] composited over white and ``opacity`` [R] in [0,1]."""

    rgb: torch.Tensor
    opacity: torch.Tensor


class TriplaneField:
    """Queries one scene code (planes [3, C, H, W]) with a decoder; stateless apart from its configuration."""

    def __init__(self, config: RendererConfig, chunk_points: int = DEFAULT_CHUNK_POINTS) -> None:
        if chunk_points < 1:
            raise ValueError(f"chunk_points must be >= 1, got {chunk_points}")
        self.config = config
        self.chunk_points = chunk_points

    def _features(self, planes: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        grid = torch.stack([q[:, [0, 1]], q[:, [0, 2]], q[:, [1, 2]]]).unsqueeze(1)  # [3, 1, N, 2]
        sampled = F.grid_sample(planes, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        sampled = sampled[:, :, 0].permute(2, 0, 1)  # [N, 3, C]
        if self.config.feature_reduction == "concat":
            return sampled.flatten(1)
        return sampled.mean(dim=1)

    @torch.no_grad()
    def query(self, decoder: NeRFDecoder, planes: torch.Tensor, points: torch.Tensor) -> FieldSample:
        """Decode ``points`` [N,3] (TripoSR frame) against ``planes`` [3, C, H, W], ``chunk_points`` at a time."""
        weight = decoder.layers[0].weight
        planes = planes.to(weight.dtype)
        densities, colors = [], []
        for chunk in points.split(self.chunk_points):
            q = (chunk / self.config.radius).to(weight.dtype)
            raw_density, raw_color = decoder(self._features(planes, q))
            densities.append(torch.exp(raw_density.float() + self.config.density_bias))
            colors.append(torch.sigmoid(raw_color.float()))
        return FieldSample(torch.cat(densities), torch.cat(colors))

    @torch.no_grad()
    def render(
        self, decoder: NeRFDecoder, planes: torch.Tensor, rays_o: torch.Tensor, rays_d: torch.Tensor
    ) -> RenderedRays:
        """Volume-render rays (origins and unit directions [R,3], TripoSR frame) of one scene code."""
        samples = self.config.num_samples_per_ray
        t_near, t_far, valid = self.clip_rays(rays_o, rays_d)
        rgb = torch.ones(len(rays_o), 3, device=rays_o.device)
        opacity = torch.zeros(len(rays_o), device=rays_o.device)
        t_edges = torch.linspace(0.0, 1.0, samples + 1, device=rays_o.device)
        t_mid = 0.5 * (t_edges[:-1] + t_edges[1:])
        delta = t_edges[1:] - t_edges[:-1]
        index = valid.nonzero()[:, 0]
        for chunk in index.split(max(1, self.chunk_points // samples)):
            depth = t_near[chunk, None] * (1 - t_mid) + t_far[chunk, None] * t_mid  # [r, S]
            points = rays_o[chunk, None] + depth[..., None] * rays_d[chunk, None]
            field = self.query(decoder, planes, points.reshape(-1, 3))
            alpha = 1 - torch.exp(-delta * field.density.view(len(chunk), samples))
            survive = torch.cumprod(1 - alpha[:, :-1] + TRANSMITTANCE_EPS, dim=-1)
            weights = alpha * torch.cat([torch.ones_like(alpha[:, :1]), survive], dim=-1)
            acc = weights.sum(-1)
            rgb[chunk] = (weights[..., None] * field.color.view(len(chunk), samples, 3)).sum(1) + (1 - acc)[:, None]
            opacity[chunk] = acc
        return RenderedRays(rgb, opacity)

    def clip_rays(self, rays_o: torch.Tensor, rays_d: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Slab test against the cube shrunk by 1e-3: (t_near [R], t_far [R], valid [R] bool)."""
        d = torch.where(rays_d.abs() < DIRECTION_EPS, torch.full_like(rays_d, DIRECTION_EPS), rays_d)
        bound = (1.0 - BOX_SHRINK) * self.config.radius
        t0, t1 = (bound - rays_o) / d, (-bound - rays_o) / d
        t_near = torch.minimum(t0, t1).amax(-1).clamp_min(0.0)
        t_far = torch.maximum(t0, t1).amin(-1)
        valid = t_far - t_near > MIN_RAY_LENGTH
        return t_near.where(valid, 0.0), t_far.where(valid, 0.0), valid
