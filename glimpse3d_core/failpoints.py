"""Named crash points for fault-injection tests, kept in one place.

``GLIMPSE3D_FAILPOINT=NAME`` makes the process SIGKILL itself when it reaches ``failpoint(NAME)``: no exception
handler, ``finally`` or ``atexit`` runs, as with an OOM kill, a pre-empted VM or a closed laptop. Unset (always,
outside tests) a failpoint costs one environment lookup. :data:`POINTS` lists every name, in pipeline order.
"""

from __future__ import annotations

import os
import signal

ENV = "GLIMPSE3D_FAILPOINT"
POINTS = (
    "stage.segment", "stage.depth", "stage.reconstruct", "stage.gaussians_from_mesh", "stage.multiview",
    "stage.enhance", "stage.optimize", "optimize.midway", "stage.refine", "stage.export", "texture.unwrap",
    "export.midway",
    "publish.staged", "store.uploading", "store.published",
)
"""``stage.<name>``: a stage starts (its inputs are materialised); ``optimize.midway``: half of the optimisation
steps done; ``texture.unwrap``: the texture's UV unwrap starts, in its own child process, which the point kills
(the export then fails with an error); ``export.midway``: model.ply and the meshes written, turntable not yet;
``publish.staged``: a folder copied beside its target (storage or output folder), not yet renamed into place;
``store.uploading``: an S3 value half uploaded (its manifest removed); ``store.published``: a stage's value stored,
Dagster not yet told."""


def failpoint(name: str) -> None:
    """SIGKILL this process if ``GLIMPSE3D_FAILPOINT`` names ``name``."""
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
