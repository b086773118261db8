"""Our TripoSR inference (checkpoint-compatible with stabilityai/TripoSR ``model.ckpt``).

:func:`load_triposr` loads the released weights strictly; :class:`TripoSRReconstructor` is the ``reconstruct``
backend (image -> coloured mesh in our world frame); :func:`build_for_layout` gives the full architecture's
checkpoint-named state dict on the meta device for ``glimpse3d models check-layout triposr``.
"""

from glimpse3d_core.models.triposr.config import TripoSRConfig
from glimpse3d_core.models.triposr.loader import load_triposr
from glimpse3d_core.models.triposr.mesh import EmptySurfaceError
from glimpse3d_core.models.triposr.model import TripoSR, build_for_layout
from glimpse3d_core.models.triposr.reconstructor import TripoSRReconstructConfig, TripoSRReconstructor

__all__ = [
    "EmptySurfaceError",
    "TripoSR",
    "TripoSRConfig",
    "TripoSRReconstructConfig",
    "TripoSRReconstructor",
    "build_for_layout",
    "load_triposr",
]
