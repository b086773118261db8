"""SyncDreamer configuration: the released architecture (``SyncDreamerConfig()``) and a tiny variant for CPU tests.

The full values are those of ``configs/syncdreamer.yaml`` and the code defaults of liuyuan-pal/SyncDreamer (see
../shared/data/checkpoints/LAYOUTS.md). ``SyncDreamerConfig.tiny()`` shrinks every width, depth and volume so the
whole model runs on a CPU in seconds through exactly the same modules and sampler.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class UNetConfig:
    """The ldm UNet (``model.diffusion_model``) with SyncDreamer's depth-wise attention.

    ``in_channels`` = noisy target latent (4) + input-view latent (4). Spatial transformers sit at the
    downsampling factors in ``attention_resolutions``; each has ``num_heads`` heads of width channels/num_heads.
    """

    in_channels: int = 8
    out_channels: int = 4
    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (4, 2, 1)
    num_heads: int = 8
    transformer_depth: int = 1
    context_dim: int = 768
    norm_groups: int = 32
    depth_attn_heads: int = 4
    """Heads of each depth-wise attention; every head is context_channels/2 wide (as the original)."""
    depth_norm_groups: int = 8


@dataclass(frozen=True)
class VAEConfig:
    """SD AutoencoderKL (``first_stage_model``): downsamples by 2**(len(ch_mult)-1)."""

    in_channels: int = 3
    out_channels: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 4
    embed_dim: int = 4
    norm_groups: int = 32
    scale_factor: float = 0.18215

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


@dataclass(frozen=True)
class CLIPConfig:
    """OpenAI CLIP (``clip_image_encoder.model``): the vision transformer plus the text-side tensors that the
    checkpoint still holds (token/positional embeddings, ln_final, text_projection, logit_scale)."""

    image_resolution: int = 224
    patch_size: int = 14
    vision_width: int = 1024
    vision_layers: int = 24
    vision_heads: int = 16
    embed_dim: int = 768
    text_width: int = 768
    vocab_size: int = 49408
    context_length: int = 77
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class VolumeConfig:
    """The spatial feature volume and the per-view frustum volumes (``spatial_volume``), world units.

    The volume is a ``spatial_volume_size``³ grid over [-spatial_volume_length, +spatial_volume_length]³; each
    target view's frustum has ``frustum_depth`` samples between camera_distance ± frustum_length along its rays.
    ``frustum_dims[i]`` is the frustum feature width at 1/2**i of the latent resolution, which the UNet's depth
    attention reads at that resolution.
    """

    encoder_channels: int = 16
    view_feature_channels: int = 16
    spatial_dims: tuple[int, int, int, int] = (64, 128, 256, 512)
    frustum_dims: tuple[int, int, int, int] = (64, 128, 256, 512)
    spatial_volume_size: int = 32
    spatial_volume_length: float = 0.5
    frustum_depth: int = 48
    frustum_length: float = 0.86603
    camera_distance: float = 1.5
    norm_groups: int = 8


@dataclass(frozen=True)
class ScheduleConfig:
    """The DDPM training schedule ("scaled linear" betas) stored as buffers in the checkpoint."""

    num_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012


@dataclass(frozen=True)
class SyncDreamerConfig:
    """The whole model. ``num_views`` cameras of SyncDreamer's rig at ``target_elevation_deg``; images are
    ``image_size`` px square (the rig's intrinsics scale from 256 px)."""

    image_size: int = 256
    num_views: int = 16
    target_elevation_deg: float = 30.0
    viewpoint_dim: int = 4
    time_embed_dim: int = 256
    unet: UNetConfig = field(default_factory=UNetConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    clip: CLIPConfig = field(default_factory=CLIPConfig)
    volume: VolumeConfig = field(default_factory=VolumeConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    def __post_init__(self) -> None:
        levels = len(self.unet.channel_mult)
        if len(self.volume.frustum_dims) != levels:
            raise ValueError(f"volume.frustum_dims needs one width per UNet level ({levels})")
        if self.image_size % (self.vae.downsample * 2 ** (levels - 1)):
            raise ValueError(f"image_size {self.image_size} is not divisible by the VAE and UNet downsampling")

    @property
    def latent_size(self) -> int:
        return self.image_size // self.vae.downsample

    @classmethod
    def tiny(cls) -> SyncDreamerConfig:
        """Small widths, one layer each, a 64 px image and small volumes: the same code, CPU-fast."""
        return cls(
            image_size=64,
            time_embed_dim=32,
            unet=UNetConfig(
                model_channels=32, channel_mult=(1, 2, 2, 2), num_res_blocks=1, attention_resolutions=(2, 1),
                num_heads=2, context_dim=32, norm_groups=8, depth_norm_groups=4,
            ),
            vae=VAEConfig(ch=16, ch_mult=(1, 1, 2, 2), num_res_blocks=1, norm_groups=8),
            clip=CLIPConfig(
                image_resolution=28, vision_width=32, vision_layers=1, vision_heads=2, embed_dim=32, text_width=16,
                vocab_size=64, context_length=8,
            ),
            volume=VolumeConfig(
                encoder_channels=8, view_feature_channels=4, spatial_dims=(8, 8, 16, 16), frustum_dims=(8, 8, 16, 16),
                spatial_volume_size=8, frustum_depth=8, norm_groups=4,
            ),
        )
