"""Our own SyncDreamer inference (liuyuan-pal/SyncDreamer), loading the released ``syncdreamer-pretrain.ckpt``
strictly: every module and parameter name reproduces the checkpoint's keys (see
../shared/data/checkpoints/LAYOUTS.md and the layout JSON in ``glimpse3d_core/models/layouts/``).

Entry points: :func:`load_syncdreamer` (weights), :class:`SyncDreamerMultiview` (image -> 16-view ViewSet),
:func:`build_for_layout` (the full architecture on the meta device, for layout checks).
"""

from __future__ import annotations

import torch
from torch import nn

from glimpse3d_core.models.syncdreamer.backend import SyncDreamerMultiview, SyncDreamerMultiviewConfig
from glimpse3d_core.models.syncdreamer.config import SyncDreamerConfig
from glimpse3d_core.models.syncdreamer.loader import MODEL_ID, load_syncdreamer
from glimpse3d_core.models.syncdreamer.model import SyncDreamer
from glimpse3d_core.models.syncdreamer.sampler import SamplerConfig, SyncDDIMSampler


def build_for_layout() -> nn.Module:
    """The full-size architecture on the meta device (no memory, no weights); its state-dict keys and shapes are
    those of the released checkpoint."""
    with torch.device("meta"):
        return SyncDreamer(SyncDreamerConfig())


__all__ = [
    "MODEL_ID",
    "SamplerConfig",
    "SyncDDIMSampler",
    "SyncDreamer",
    "SyncDreamerConfig",
    "SyncDreamerMultiview",
    "SyncDreamerMultiviewConfig",
    "build_for_layout",
    "load_syncdreamer",
]
