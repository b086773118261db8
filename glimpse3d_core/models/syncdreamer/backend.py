"""SyncDreamer as a multiview backend: one object photo -> the 16 views of SyncDreamer's rig.

Device needs: CUDA for practical use (fp16: 2.8 GB of weights; 50 steps with batch_view_num 8 took 5.8 s and peaked
at 4.2 GB allocated on an H100, research/gpu_syncdreamer.py; with 16, the default, 3.4 s on an H200,
research/profile_models.py); it runs on CPU in float32, but the full model takes many minutes per image there.
Background: the model is given the photo composited on white and generates views on white; alpha is estimated
from the distance to white (see :func:`~glimpse3d_core.models.syncdreamer.preprocess.alpha_from_white`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from glimpse3d_core.cameras import syncdreamer16_rig
from glimpse3d_core.models.loading import inference_dtype
from glimpse3d_core.models.syncdreamer.loader import load_syncdreamer
from glimpse3d_core.models.syncdreamer.model import SyncDreamer
from glimpse3d_core.models.syncdreamer.preprocess import alpha_from_white, prepare_input
from glimpse3d_core.models.syncdreamer.sampler import SamplerConfig, SyncDDIMSampler
from glimpse3d_core.types import ObjectImage, ViewSet

MAX_ABS_ELEVATION_DEG = 90.0


@dataclass(frozen=True)
class SyncDreamerMultiviewConfig:
    """``crop_size``: the object's longer side in px on the 256 px input (README: 200; None = pad and resize the
    whole photo); ``seed`` makes a run reproducible on one device; ``alpha_low``/``alpha_high``: distance from
    white (max over channels of 1 - c) at which alpha starts rising / reaches 1."""

    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    crop_size: int | None = 200
    seed: int = 6033
    alpha_low: float = 0.02
    alpha_high: float = 0.08


class SyncDreamerMultiview:
    """``backend(image, input_elevation_deg)`` -> ViewSet of the 16 rig views (``syncdreamer16_rig(image_size)``),
    rgb straight colour in [0, 1], alpha estimated from the white background, depth None. View 0 is the generated
    counterpart of the input view."""

    name = "syncdreamer"

    def __init__(self, model: SyncDreamer, config: SyncDreamerMultiviewConfig | None = None) -> None:
        self.model = model
        self.config = config or SyncDreamerMultiviewConfig()
        crop = self.config.crop_size
        if crop is not None and not 0 < crop <= model.cfg.image_size:
            raise ValueError(f"crop_size must be in 1..{model.cfg.image_size} (the model's image size), got {crop}")
        self.sampler = SyncDDIMSampler(model, self.config.sampler)

    @classmethod
    def from_pretrained(
        cls, source: str | Path | None = None, device: torch.device | str = "cpu",
        config: SyncDreamerMultiviewConfig | None = None,
    ) -> SyncDreamerMultiview:
        """Load the released checkpoint (fp16 on CUDA, fp32 on CPU); MissingWeightsError if it is absent."""
        device = torch.device(device)
        return cls(load_syncdreamer(source, device, inference_dtype(device)), config)

    @torch.no_grad()
    def __call__(
        self, image: ObjectImage, input_elevation_deg: float,
        progress: Callable[[int, int], None] | None = None,
    ) -> ViewSet:
        if not (math.isfinite(input_elevation_deg) and abs(input_elevation_deg) <= MAX_ABS_ELEVATION_DEG):
            raise ValueError(f"input elevation must be a finite angle in [-90, 90] degrees, got {input_elevation_deg}")
        m, size = self.model, self.model.cfg.image_size
        device = m.device
        image_in = prepare_input(image, size, self.config.crop_size).to(device)
        generator = torch.Generator(device=device).manual_seed(self.config.seed)
        clip_embed = m.clip_image_encoder(image_in.to(m.dtype))
        latent = m.encode_latent(image_in, generator)
        elevation = torch.tensor([math.radians(input_elevation_deg)], device=device)
        latents = self.sampler.sample(latent, clip_embed, elevation, generator, progress)[0]
        views = []
        for start in range(0, len(latents), self.config.sampler.batch_view_num):
            views.append(m.decode_latent(latents[start : start + self.config.sampler.batch_view_num]))
        rgb = ((torch.cat(views) + 1.0) / 2.0).permute(0, 2, 3, 1).cpu().numpy().astype(np.float32)
        rgb, alpha = alpha_from_white(rgb, self.config.alpha_low, self.config.alpha_high)
        return ViewSet(rig=syncdreamer16_rig(size), rgb=rgb, alpha=alpha, depth=None)
