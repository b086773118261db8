"""Our TripoSR inference (checkpoint-compatible with stabilityai/TripoSR ``model.ckpt``).

:func:`load_triposr` loads the released weights strictly; :class:`TripoSRReconstructor` is the ``reconstruct``
backend (image -> coloured mesh in our world frame); :func:`build_for_layout` gives the full architecture's
checkpoint-named state dict on the meta device for ``glimpse3d models check-layout triposr``.

The names below are imported on first use: the architecture needs transformers (about 2 s to import), which a
process that only reads configurations (every pipeline step) should not pay for.
"""

from importlib import import_module

_EXPORTS = {
    "EmptySurfaceError": "mesh",
    "TripoSR": "model",
    "TripoSRConfig": "config",
    "TripoSRReconstructConfig": "settings",
    "TripoSRReconstructor": "reconstructor",
    "build_for_layout": "model",
    "load_triposr": "loader",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
