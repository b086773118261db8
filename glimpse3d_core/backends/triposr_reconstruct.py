"""Reconstruct backend: TripoSR (our checkpoint-compatible implementation, :mod:`glimpse3d_core.models.triposr`).

The released weights (``glimpse3d models download triposr``) are located through the model store and loaded
once per process, device and dtype (:func:`~glimpse3d_core.models.loading.cached`); each stage call wraps the shared
model with its own inference settings. Device and dtype: the run context's (fp16 on CUDA, the NeRF decoder staying
float32; fp32 on CPU, slow at the default marching-cubes resolution).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from glimpse3d_core.backends.base import Backend, RunContext, register
from glimpse3d_core.models.loading import cached
from glimpse3d_core.models.triposr.settings import MODEL_ID, TripoSRReconstructConfig

if TYPE_CHECKING:
    from glimpse3d_core.models.triposr.reconstructor import TripoSRReconstructor


def build(settings: TripoSRReconstructConfig, context: RunContext) -> TripoSRReconstructor:
    """The TripoSR backend with ``settings``; MissingWeightsError (naming the download command) without weights."""
    from glimpse3d_core.models.triposr import TripoSRReconstructor, load_triposr

    root = str(context.store.require(MODEL_ID)[0].root)
    device, dtype = context.device, context.dtype
    model = cached((MODEL_ID, root, str(device), dtype), lambda: load_triposr(root, device, dtype))
    return TripoSRReconstructor(model, settings)


TRIPOSR = register(Backend("triposr", "reconstruct", TripoSRReconstructConfig, lambda s, c: build(s, c).reconstruct,
                           models=lambda s: (MODEL_ID,), description="TripoSR (our checkpoint-compatible code)"))
