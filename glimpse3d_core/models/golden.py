"""Reference goldens: seeded weights in a released layout, the reduced configurations they were made with, and
the agreement measure.

``research/make_goldens.py`` runs the upstream code (TripoSR, SyncDreamer) on :func:`seeded_state_dict` weights
for the reduced configurations below and saves its outputs under ``tests/golden/``; the tests and ``glimpse3d
models verify`` load the same weights into our implementation and compare (:func:`relative_error`). Weights are
regenerated from the seed rather than stored: each tensor comes from its own CPU generator seeded with
``seed + crc32(key)``, so the values do not depend on the order of the keys.

Value scales keep activations O(1) through random networks: a 1-D ``*.weight`` (a norm's gain) is 1 + 0.1 N(0,1),
a 1-D ``*.bias`` 0.1 N(0,1), anything else N(0,1) / sqrt(fan-in) with fan-in = the product of all but the first
dimension (1-D tensors of other names: N(0,1)).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from glimpse3d_core.models.syncdreamer.config import SyncDreamerConfig
    from glimpse3d_core.models.triposr.config import TripoSRConfig
    from glimpse3d_core.models.triposr.decoder import NeRFDecoder

GOLDEN_SEED = 15
"""Seed of every golden's weights and inputs."""
TOLERANCE = 1e-4
"""Bound on max |ours - reference| / max |reference| for every compared tensor."""

NORM_GAIN_STD = 0.1
BIAS_STD = 0.1


def syncdreamer_golden_config() -> SyncDreamerConfig:
    """SyncDreamer with the widths reduced as far as upstream's hard-coded values allow: CLIP embedding and UNet
    context 768 (cc_projection is 772 -> 768 there), time embedding 256, ldm's GroupNorm(32) widths, GroupNorm(8)
    and 4 heads in the volume nets and depth attention, two res blocks per level (its output-block map assumes it)."""
    from glimpse3d_core.models.syncdreamer.config import (
        CLIPConfig,
        SyncDreamerConfig,
        UNetConfig,
        VAEConfig,
        VolumeConfig,
    )

    return SyncDreamerConfig(
        image_size=64,
        time_embed_dim=256,
        unet=UNetConfig(model_channels=32, channel_mult=(1, 2, 2, 2), num_res_blocks=2, attention_resolutions=(4, 2, 1),
                        num_heads=2, context_dim=768, norm_groups=32, depth_attn_heads=4, depth_norm_groups=8),
        vae=VAEConfig(ch=32, ch_mult=(1, 1, 2, 2), num_res_blocks=1, norm_groups=32),
        clip=CLIPConfig(image_resolution=224, patch_size=32, vision_width=64, vision_layers=1, vision_heads=1,
                        embed_dim=768, text_width=64, vocab_size=64, context_length=8),
        volume=VolumeConfig(encoder_channels=8, view_feature_channels=8, spatial_dims=(16, 16, 32, 32),
                            frustum_dims=(16, 16, 32, 32), spatial_volume_size=8, frustum_depth=8, norm_groups=8),
    )


TRIPOSR_SLANT = {"a": 0.4, "b": 0.35, "c": 0.675, "k": 0.6}
"""The TripoSR frames golden's field, in units of the radius (x back, y right, z up): the slanted ellipsoid
(x/a)² + ((y - k z)/b)² + (z/c)² = 1. Its silhouette from +x leans right at the top, so a left/right or an
up/down flip changes it; its image-plane bounding box is centred (as TripoSR's pre-processing centres the input's);
it is 2c = 1.35 radius = 1.17 tall, 0.85 of TripoSR's default camera's view height at the origin (2 · 1.9 ·
tan 20°), the framing of the pre-processed input (foreground ratio 0.85)."""
TRIPOSR_FRAMES_SHARPNESS = 40.0
"""A steep density across the surface, so that the rendered silhouette is the iso-surface's."""
TRIPOSR_FRAMES_COLOR = (0.01, 0.01, 0.01)
"""Near-black, so that the white-composited render gives the opacity: opacity = (1 - rgb) / 0.99."""


def triposr_frames_field() -> tuple[TripoSRConfig, NeRFDecoder, torch.Tensor]:
    """(config, decoder, planes) of the frames golden: TripoSR's tiny config with released-size planes (64 px) and
    the :data:`TRIPOSR_SLANT` field (analytic, see :mod:`glimpse3d_core.models.triposr.synthetic`)."""
    from glimpse3d_core.models.triposr.config import TriplaneTokenizerConfig, TripoSRConfig
    from glimpse3d_core.models.triposr.synthetic import plane_coords, plane_field

    tiny = TripoSRConfig.tiny()
    config = tiny.model_copy(update={"tokenizer": TriplaneTokenizerConfig(
        plane_size=32, num_channels=tiny.tokenizer.num_channels)})
    q = plane_coords(config)
    a, b, c, k = (TRIPOSR_SLANT[n] for n in "abck")
    size = len(q)
    terms = torch.zeros(3, size, size)
    terms[0] = (q[None, :] / a) ** 2  # plane (x, y): columns x
    terms[2] = ((q[None, :] - k * q[:, None]) / b) ** 2 + (q[:, None] / c) ** 2  # plane (y, z): columns y, rows z
    decoder, planes = plane_field(config, terms, TRIPOSR_FRAMES_COLOR, sharpness=TRIPOSR_FRAMES_SHARPNESS)
    return config, decoder, planes


def seeded_tensor(key: str, shape: Sequence[int], seed: int = GOLDEN_SEED) -> torch.Tensor:
    """The float32 value of ``key`` in :func:`seeded_state_dict` (module docstring)."""
    generator = torch.Generator().manual_seed(seed + zlib.crc32(key.encode()))
    noise = torch.randn(tuple(shape), generator=generator, dtype=torch.float32)
    if len(shape) == 1 and key.endswith(".weight"):
        return 1.0 + NORM_GAIN_STD * noise
    if len(shape) == 1 and key.endswith(".bias"):
        return BIAS_STD * noise
    fan_in = 1
    for d in shape[1:]:
        fan_in *= int(d)
    return noise / max(fan_in, 1) ** 0.5


def seeded_state_dict(
    layout: Mapping[str, Sequence[int]], keep: Mapping[str, torch.Tensor] | None = None, seed: int = GOLDEN_SEED
) -> dict[str, torch.Tensor]:
    """Random float32 weights for every key of ``layout`` (key -> shape), except those in ``keep`` (fixed
    buffers such as noise schedules or camera poses), which are copied."""
    keep = keep or {}
    return {k: keep[k].clone() if k in keep else seeded_tensor(k, shape, seed) for k, shape in layout.items()}


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """max |ours - reference| / max |reference| in float64 (shapes must be equal)."""
    if tuple(ours.shape) != tuple(reference.shape):
        raise ValueError(f"shape {tuple(ours.shape)} != reference {tuple(reference.shape)}")
    ref = reference.detach().double().cpu()
    scale = ref.abs().max().item()
    return (ours.detach().double().cpu() - ref).abs().max().item() / max(scale, 1e-30)
