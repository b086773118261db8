"""SyncDreamer's synchronised DDIM sampler (SyncDDIMSampler).

Timesteps are "uniform": t_k = k·(T // steps) + 1, k < steps (1, 21, …, 981 for 50 steps of T = 1000), as the
original's ``make_ddim_timesteps`` for step counts that divide T (for others it returns more timesteps than asked,
or one past the schedule; this gives exactly ``steps``). At every
step all N views' latents build one spatial volume; the noise of each view is then predicted (``batch_view_num``
views per UNet call) with classifier-free guidance: eps = eps_u + cfg_scale · (eps_c - eps_u), where the
unconditional branch zeroes the projected CLIP context, the frustum features and the concat latent. The DDIM update uses
σ_k = eta · sqrt((1 - ᾱ_prev) / (1 - ᾱ_k) · (1 - ᾱ_k / ᾱ_prev)), ᾱ_prev of the first step being ᾱ_0, with no noise
added at the last step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from glimpse3d_core.models.syncdreamer.model import SyncDreamer

MIN_DIRECTION_VARIANCE = 1e-7
LATENT_CHANNELS = 4


@dataclass(frozen=True)
class SamplerConfig:
    """``eta`` 1.0 is the original's default (stochastic DDIM). ``batch_view_num``: views per UNet call, which
    trades memory for speed and changes nothing else (each view's noise is predicted from the same volume); 16, all
    of the rig's views in one call per step (the original's script defaults to 8): 50 steps in 3.44 s against
    6.18 s with 8 on an H200 (full size, random weights, fp16; research/profile_models.py)."""

    steps: int = 50
    cfg_scale: float = 2.0
    eta: float = 1.0
    batch_view_num: int = 16

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.batch_view_num < 1:
            raise ValueError(f"batch_view_num must be >= 1, got {self.batch_view_num}")
        if not self.eta >= 0.0:
            raise ValueError(f"eta must be >= 0, got {self.eta}")


class SyncDDIMSampler:
    def __init__(self, model: SyncDreamer, cfg: SamplerConfig) -> None:
        self.model, self.cfg = model, cfg
        T = model.cfg.schedule.num_timesteps
        if cfg.steps > T:
            raise ValueError(f"steps ({cfg.steps}) cannot exceed the {T} training timesteps")
        self.timesteps = torch.arange(cfg.steps) * (T // cfg.steps) + 1
        ac = model.alphas_cumprod.detach().double().cpu()
        self.alphas = ac[self.timesteps]
        self.alphas_prev = torch.cat([ac[:1], ac[self.timesteps[:-1]]])
        self.sigmas = cfg.eta * torch.sqrt(
            (1 - self.alphas_prev) / (1 - self.alphas) * (1 - self.alphas / self.alphas_prev)
        )

    def _step(self, x: torch.Tensor, eps: torch.Tensor, index: int, generator: torch.Generator | None) -> torch.Tensor:
        a_t, a_prev, sigma = (float(v[index]) for v in (self.alphas, self.alphas_prev, self.sigmas))
        pred_x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t**0.5
        direction = max(1.0 - a_prev - sigma**2, MIN_DIRECTION_VARIANCE) ** 0.5 * eps
        x_prev = a_prev**0.5 * pred_x0 + direction
        if index > 0:
            x_prev = x_prev + sigma * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return x_prev

    def _predict_noise(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                       volumes: dict[int, torch.Tensor], concat: torch.Tensor) -> torch.Tensor:
        unet = self.model.model.diffusion_model
        if self.cfg.cfg_scale == 1.0:
            return unet(torch.cat([x, concat.to(x.dtype)], 1), t, context, volumes).float()
        x2 = torch.cat([x, x])
        concat2 = torch.cat([concat, torch.zeros_like(concat)]).to(x.dtype)
        context2 = torch.cat([context, torch.zeros_like(context)])
        volumes2 = {k: torch.cat([v, torch.zeros_like(v)]) for k, v in volumes.items()}
        eps_c, eps_u = unet(torch.cat([x2, concat2], 1), torch.cat([t, t]), context2, volumes2).float().chunk(2)
        return eps_u + self.cfg.cfg_scale * (eps_c - eps_u)

    @torch.no_grad()
    def predict_noise(
        self, x: torch.Tensor, t: torch.Tensor, input_latent: torch.Tensor, clip_embed: torch.Tensor,
        v_embed: torch.Tensor, grids: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Guided noise [B, N, 4, h, w] of all N views' latents ``x`` at timesteps ``t`` [B] (one spatial volume,
        then ``batch_view_num`` views per UNet call). ``v_embed``: :meth:`SyncDreamer.viewpoint_embedding`;
        ``grids``: the (unprojection, frustum) grids of the rig, computed here when None."""
        m = self.model
        B, N, _, h, w = x.shape
        if grids is None:
            grids = (m.spatial_volume.unprojection_grid(m.poses, m.Ks), m.spatial_volume.frustum_grid(m.poses, m.Ks))
        unprojection, frustum = grids
        t_embed = m.embed_time(t)
        volume = m.spatial_volume.build(x, t_embed, v_embed, unprojection)
        eps = []
        for start in range(0, N, self.cfg.batch_view_num):
            views = torch.arange(start, min(start + self.cfg.batch_view_num, N), device=x.device)
            TN = len(views)
            volumes = m.spatial_volume.frustum_features(volume, t_embed, v_embed, frustum, views)
            context = m.context(clip_embed, v_embed, views)
            concat = input_latent.repeat_interleave(TN, dim=0)
            x_views = x[:, views].reshape(B * TN, LATENT_CHANNELS, h, w).to(m.dtype)
            t_views = t.repeat_interleave(TN)
            eps.append(self._predict_noise(x_views, t_views, context, volumes, concat).view(B, TN, -1, h, w))
        return torch.cat(eps, dim=1)

    @torch.no_grad()
    def sample(
        self,
        input_latent: torch.Tensor,
        clip_embed: torch.Tensor,
        elevation_rad: torch.Tensor,
        generator: torch.Generator | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """Latents [B, N, 4, h, w] (diffusion scale) of the N rig views.

        ``input_latent`` [B,4,h,w]: the input view's unscaled VAE posterior sample; ``clip_embed`` [B,1,E];
        ``elevation_rad`` [B]: the input view's elevation. ``progress(step, total)`` is called after every step.
        """
        m = self.model
        B, N, device = input_latent.shape[0], m.cfg.num_views, input_latent.device
        h = w = m.cfg.latent_size
        v_embed = m.viewpoint_embedding(elevation_rad.to(device))
        grids = (m.spatial_volume.unprojection_grid(m.poses, m.Ks), m.spatial_volume.frustum_grid(m.poses, m.Ks))
        x = torch.randn((B, N, LATENT_CHANNELS, h, w), generator=generator, device=device, dtype=torch.float32)
        total = len(self.timesteps)
        for i in range(total):
            index = total - 1 - i
            t = torch.full((B,), int(self.timesteps[index]), device=device, dtype=torch.long)
            eps = self.predict_noise(x, t, input_latent, clip_embed, v_embed, grids)
            x = self._step(x, eps, index, generator)
            if progress is not None:
                progress(i + 1, total)
        return x
