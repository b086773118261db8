"""SyncDreamer (SyncMultiviewDiffusion) as one module whose state dict is the released checkpoint's.

Top-level names: the schedule buffers (``betas`` … ``posterior_log_variance_clipped``), the rig buffers ``poses``
[N,3,4] (OpenCV world-to-camera), ``Ks`` [N,3,3] (pixels at ``image_size``) and ``azimuth`` [N] (radians wrapped to
[-π, π)), ``time_embed`` (the volume nets' time MLP), ``first_stage_model`` (VAE), ``clip_image_encoder``,
``cc_projection``, ``spatial_volume`` and ``model.diffusion_model`` (the UNet).

Conditioning of target view i given the input view (view 0) at elevation e_in:
viewpoint embedding [e_in - e_target, sin Δa_i, cos Δa_i, 0] (radians; zero123's negated-elevation convention,
e_target = 30°, Δa_i = azimuth_i - azimuth_0); context = cc_projection([CLIP(image), embedding]) (one token);
concat latent = the input image's VAE posterior sample, unscaled (the original scales it by 0.18215 and divides
it back before the UNet); depth-wise attention reads the view's frustum features.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from glimpse3d_core.cameras import syncdreamer16_rig
from glimpse3d_core.models.syncdreamer.clip import CLIPImageEncoder
from glimpse3d_core.models.syncdreamer.config import SyncDreamerConfig
from glimpse3d_core.models.syncdreamer.layers import timestep_embedding
from glimpse3d_core.models.syncdreamer.unet import DepthWiseUNet
from glimpse3d_core.models.syncdreamer.vae import AutoencoderKL
from glimpse3d_core.models.syncdreamer.volume import SpatialVolume

RIG_IMAGE_SIZE = 256
"""Image size at which SyncDreamer's rig intrinsics (fx = fy = 280) are defined."""


class UNetWrapper(nn.Module):
    """Holds the UNet as ``diffusion_model`` (the checkpoint's ``model.diffusion_model`` prefix)."""

    def __init__(self, unet: DepthWiseUNet) -> None:
        super().__init__()
        self.diffusion_model = unet


class SyncDreamer(nn.Module):
    def __init__(self, cfg: SyncDreamerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self._register_schedule()
        self._register_rig()
        t_dim = cfg.time_embed_dim
        self.time_embed = nn.Sequential(nn.Linear(t_dim, t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim))
        self.first_stage_model = AutoencoderKL(cfg.vae)
        self.clip_image_encoder = CLIPImageEncoder(cfg.clip)
        self.cc_projection = nn.Linear(cfg.clip.embed_dim + cfg.viewpoint_dim, cfg.unet.context_dim)
        self.spatial_volume = SpatialVolume(
            cfg.volume, t_dim, cfg.viewpoint_dim, cfg.num_views, cfg.image_size, cfg.latent_size
        )
        self.model = UNetWrapper(DepthWiseUNet(cfg.unet, cfg.volume.frustum_dims))

    def _register_schedule(self) -> None:
        s = self.cfg.schedule
        # Computed on the CPU whatever the ambient default device (meta builds included): 7 x 1000 values.
        f64 = {"dtype": torch.float64, "device": "cpu"}
        betas = torch.linspace(s.beta_start**0.5, s.beta_end**0.5, s.num_timesteps, **f64) ** 2
        alphas = 1.0 - betas
        alphas_cumprod = torch.cumprod(alphas, dim=0)
        alphas_cumprod_prev = torch.cat([torch.ones(1, **f64), alphas_cumprod[:-1]])
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        buffers = {
            "betas": betas,
            "alphas": alphas,
            "alphas_cumprod": alphas_cumprod,
            "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1.0 - alphas_cumprod).sqrt(),
            "posterior_variance": posterior_variance,
            "posterior_log_variance_clipped": posterior_variance.clamp(min=1e-20).log().clamp(min=-10.0),
        }
        for name, value in buffers.items():
            self.register_buffer(name, value.float())

    def _register_rig(self) -> None:
        rig = syncdreamer16_rig(RIG_IMAGE_SIZE)
        if len(rig) != self.cfg.num_views:
            raise ValueError(f"SyncDreamer's rig has {len(rig)} views, config asks for {self.cfg.num_views}")
        K = rig.Ks.astype(np.float64) * np.array([self.cfg.image_size / RIG_IMAGE_SIZE] * 2 + [1.0])[:, None]
        centres = np.linalg.inv(rig.viewmats)[:, :3, 3]
        azimuth = (np.arctan2(centres[:, 1], centres[:, 0]) + math.pi) % (2 * math.pi) - math.pi
        self.register_buffer("poses", torch.as_tensor(rig.viewmats[:, :3, :4], dtype=torch.float32))
        self.register_buffer("Ks", torch.as_tensor(K, dtype=torch.float32))
        self.register_buffer("azimuth", torch.as_tensor(azimuth, dtype=torch.float32))

    @property
    def dtype(self) -> torch.dtype:
        return self.cc_projection.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.cc_projection.weight.device

    def viewpoint_embedding(self, elevation_rad: torch.Tensor) -> torch.Tensor:
        """[B, N, 4] embedding of every rig view relative to the input view, for input elevations [B] (radians)."""
        d_e = elevation_rad.float() - math.radians(self.cfg.target_elevation_deg)
        d_a = self.azimuth.float() - self.azimuth[0].float()
        B, N = d_e.shape[0], d_a.shape[0]
        d_e, d_a = d_e[:, None].expand(B, N), d_a[None].expand(B, N)
        return torch.stack([d_e, torch.sin(d_a), torch.cos(d_a), torch.zeros_like(d_a)], dim=-1)

    def embed_time(self, t: torch.Tensor) -> torch.Tensor:
        """[B] timesteps -> [B, time_embed_dim] for the volume networks."""
        return self.time_embed(timestep_embedding(t, self.cfg.time_embed_dim).to(self.dtype))

    def context(self, clip_embed: torch.Tensor, v_embed: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        """Cross-attention context [B*TN, 1, context_dim] of target ``views`` from clip_embed [B,1,E]."""
        B, TN = clip_embed.shape[0], len(views)
        clip_ = clip_embed.repeat_interleave(TN, dim=0)
        v_ = v_embed[:, views].reshape(B * TN, 1, -1)
        return self.cc_projection(torch.cat([clip_, v_], dim=-1).to(self.dtype))

    def encode_latent(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Unscaled VAE posterior sample [B,4,h,w] of ``image`` [B,3,H,W] in [-1, 1]."""
        return self.first_stage_model.encode_sample(image.to(self.dtype), generator)

    def decode_latent(self, z: torch.Tensor) -> torch.Tensor:
        """Diffusion latents (scaled by the VAE scale factor) [B,4,h,w] -> images in [-1, 1] (clamped)."""
        image = self.first_stage_model.decode((z / self.cfg.vae.scale_factor).to(self.dtype))
        return image.float().clamp(-1.0, 1.0)
