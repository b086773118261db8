"""Multiview backend: SyncDreamer (our checkpoint-compatible implementation, :mod:`glimpse3d_core.models.syncdreamer`).

The released checkpoint (``glimpse3d models download syncdreamer``) is located through the model store and
loaded once per process, device, dtype and architecture (:func:`~glimpse3d_core.models.loading.cached`). SyncDreamer
generates its 16 views relative to the input camera: view 0 at the input's azimuth, all at 30° elevation; given
our input camera (azimuth 0, :mod:`glimpse3d_core.input_camera`) they are exactly the views of
:func:`~glimpse3d_core.cameras.syncdreamer16_rig`. The input elevation is read from the input camera's position.
Device and dtype: the run context's: fp16 on CUDA (about 6 s for 50 steps on an H100); fp32 on CPU, many minutes.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import Field

from glimpse3d_core.backends.base import BackendSettings, RunContext
from glimpse3d_core.models.loading import cached
from glimpse3d_core.models.syncdreamer import (
    MODEL_ID,
    SamplerConfig,
    SyncDreamerConfig,
    SyncDreamerMultiview,
    SyncDreamerMultiviewConfig,
    load_syncdreamer,
)
from glimpse3d_core.models.syncdreamer.loader import CHECKPOINT_NAME
from glimpse3d_core.types import Camera

ARCHITECTURES = {"released": SyncDreamerConfig, "tiny": SyncDreamerConfig.tiny}
"""Architectures a checkpoint can hold: the released one, and the tiny test-size one (same code)."""
AZIMUTH_ATOL_DEG = 1e-3
_SAMPLER = SamplerConfig()
_BACKEND = SyncDreamerMultiviewConfig()


class SyncDreamerSettings(BackendSettings):
    """Multiview backend ``syncdreamer``: sampling settings (defaults as the original: 50 DDIM steps, cfg 2.0,
    eta 1)."""

    name: Literal["syncdreamer"] = "syncdreamer"
    steps: int = Field(_SAMPLER.steps, ge=1, le=1000, description="DDIM steps")
    cfg_scale: float = Field(_SAMPLER.cfg_scale, ge=0.0, description="classifier-free guidance scale")
    eta: float = Field(_SAMPLER.eta, ge=0.0, description="DDIM eta (0 deterministic, 1 the original's default)")
    batch_view_num: int = Field(_SAMPLER.batch_view_num, ge=1, le=16, description="views per UNet batch (memory)")
    crop_size: int | None = Field(_BACKEND.crop_size, ge=1, description="object's longer side on the model's input "
                                  "(px at the model's image size); None: pad and resize the whole photo")
    seed: int = Field(_BACKEND.seed, description="noise seed (reproducible on one device)")
    architecture: Literal["released", "tiny"] = Field(
        "released", description="architecture the checkpoint holds: 'released' (syncdreamer-pretrain.ckpt) or "
                                "'tiny' (test-size checkpoints)")

    def backend_config(self) -> SyncDreamerMultiviewConfig:
        sampler = SamplerConfig(self.steps, self.cfg_scale, self.eta, self.batch_view_num)
        return SyncDreamerMultiviewConfig(sampler, self.crop_size, self.seed, _BACKEND.alpha_low, _BACKEND.alpha_high)


def input_elevation_deg(camera: Camera) -> float:
    """Elevation (deg, positive above the horizontal plane through the origin) of ``camera``'s centre; the camera
    must sit at azimuth 0 (on the +X side), where SyncDreamer's generated views line up with our rig."""
    viewmat = np.asarray(camera.viewmat, dtype=np.float64)
    center = -viewmat[:3, :3].T @ viewmat[:3, 3]
    distance = float(np.linalg.norm(center))
    if distance == 0.0:
        raise ValueError("the input camera sits at the origin; SyncDreamer needs it on an orbit around the object")
    azimuth = math.degrees(math.atan2(center[1], center[0]))  # 0 for a camera straight above or below
    if abs(azimuth) > AZIMUTH_ATOL_DEG:
        raise ValueError("SyncDreamer's views are generated relative to the input camera, which must be at azimuth 0 "
                         f"(on the +X side); it is at {azimuth:.3f} deg")
    return math.degrees(math.asin(center[2] / distance))


def syncdreamer_multiview(settings: SyncDreamerSettings, context: RunContext) -> SyncDreamerMultiview:
    """The SyncDreamer model with ``settings`` on the context's device; MissingWeightsError (naming the download
    command) without weights."""
    path = context.store.require(MODEL_ID)[0].path(CHECKPOINT_NAME)
    device, dtype = context.device, context.dtype
    architecture = ARCHITECTURES[settings.architecture]()
    model = cached((MODEL_ID, str(path), str(device), dtype, settings.architecture),
                   lambda: load_syncdreamer(path, device, dtype, architecture))
    return SyncDreamerMultiview(model, settings.backend_config())
