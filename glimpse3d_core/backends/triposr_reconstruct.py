"""Reconstruct backend: TripoSR (our checkpoint-compatible implementation, :mod:`glimpse3d_core.models.triposr`).

The released weights (``glimpse3d models download triposr``) are located through the model store and loaded
once per process and device (:func:`~glimpse3d_core.models.loading.cached`); each stage call wraps the shared
model with its own inference settings. Device: CUDA in fp16 where present (the NeRF decoder stays float32),
else CPU fp32 (slow at the default marching-cubes resolution).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from glimpse3d_core.models.loading import cached, default_device, inference_dtype
from glimpse3d_core.models.store import ModelStore
from glimpse3d_core.models.triposr.settings import MODEL_ID, TripoSRReconstructConfig

if TYPE_CHECKING:
    from glimpse3d_core.models.triposr.reconstructor import TripoSRReconstructor


def triposr_reconstructor(settings: TripoSRReconstructConfig, store: ModelStore | None = None,
                          device: str | torch.device | None = None) -> TripoSRReconstructor:
    """The TripoSR backend with ``settings``; MissingWeightsError (naming the download command) without weights."""
    from glimpse3d_core.models.triposr import TripoSRReconstructor, load_triposr

    root = str((store or ModelStore()).require(MODEL_ID)[0].root)
    device = torch.device(device) if device is not None else default_device()
    model = cached((MODEL_ID, root, str(device)), lambda: load_triposr(root, device, inference_dtype(device)))
    return TripoSRReconstructor(model, settings)
