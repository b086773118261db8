"""File formats: Gaussian splat PLY (:mod:`.ply`), images (:mod:`.images`), meshes (:mod:`.mesh`), video
(:mod:`.video`). Every writer is atomic (:func:`atomic_write`)."""

from glimpse3d_core.io.atomic import atomic_write, atomic_write_bytes

__all__ = ["atomic_write", "atomic_write_bytes"]
