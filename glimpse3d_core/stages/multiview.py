"""Multiview stage: the 16 target views the optimiser fits, plus the input photo as the most trusted view.

Weight-free backend ``initial_renders``: SyncDreamer's 16-view rig (:func:`glimpse3d_core.cameras.syncdreamer16_rig`)
rendered from the initial Gaussians. These views hold no new information: they are the coarse geometry's own
appearance, used as *regularising targets* that keep the fit of the input photo from drifting in the unseen views
(optimise + refine move novel views by a few tenths of a dB against them); new content comes only from a generative
backend. The input photo always becomes view 0 of the returned :class:`ViewSet` with weight
``input_weight``: when the input camera is the rig's view 0 (``--input-camera syncdreamer16``) the photo replaces
that render; otherwise the input camera is prepended as an extra view and the 16 rig views follow.
Model backend ``syncdreamer`` (``auto`` takes it when its weights are present): the 16 rig views generated from the
photo by SyncDreamer (:mod:`glimpse3d_core.backends.syncdreamer_multiview`), in the same rig and ViewSet layout.

Images are straight RGB + alpha (see :mod:`glimpse3d_core.types`); ``depth`` is the rendered expected camera z of
the initial Gaussians for every view (the input view included), 0 where nothing was rendered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from glimpse3d_core.backends.base import (
    Backend,
    BackendSettings,
    RunContext,
    backend_field,
    build_stage_backend,
    register,
)
from glimpse3d_core.backends.syncdreamer_multiview import (
    SyncDreamerSettings,
    input_elevation_deg,
    syncdreamer_multiview,
)
from glimpse3d_core.cameras import syncdreamer16_rig
from glimpse3d_core.imaging import resize
from glimpse3d_core.render import render_views
from glimpse3d_core.types import Camera, CameraRig, Gaussians, ObjectImage, ViewSet

INPUT_VIEW = 0
"""Index of the input photo in the ViewSet this stage returns."""
CAMERA_ATOL = 1e-4
"""Tolerance for deciding that two cameras are the same (pose, and intrinsics relative to the image size)."""

MultiviewBackend = Callable[[Gaussians, CameraRig, ObjectImage], ViewSet]
"""What a multiview backend's ``build`` returns: ``(initial Gaussians, rig, photo) -> views`` for a rig whose view
``INPUT_VIEW`` is the input camera and whose other views are cameras of SyncDreamer's 16-view rig."""


class InitialRendersSettings(BackendSettings):
    """Multiview backend ``initial_renders`` (weight-free): renders of the initial Gaussians from the rig cameras,
    used as regularising targets (they add no information the initial Gaussians do not have)."""

    name: Literal["initial_renders"] = "initial_renders"


class SyncDreamerBackend:
    """SyncDreamer's 16 views generated from the photo (input elevation from the input camera), resized to the rig;
    ``depth`` stays the initial Gaussians' rendered depth (the coarse geometry the enhance ControlNet and refine
    use), as does any view that is not a SyncDreamer rig camera (the input view, which ``run`` replaces)."""

    def __init__(self, settings: SyncDreamerSettings, context: RunContext) -> None:
        self.model = syncdreamer_multiview(settings, context)

    def __call__(self, gaussians: Gaussians, rig: CameraRig, photo: ObjectImage) -> ViewSet:
        rendered = render_views(gaussians, rig)
        generated = self.model(photo, input_elevation_deg(rig[INPUT_VIEW]))
        model_rig = syncdreamer16_rig(rig.width)
        rgb, alpha = rendered.rgb.astype(np.float32).copy(), rendered.alpha.astype(np.float32).copy()
        for i in range(len(rig)):
            match = [j for j in range(len(model_rig)) if is_same_camera(rig[i], model_rig[j], CAMERA_ATOL)]
            if match:
                rgb[i] = resize(generated.rgb[match[0]], rig.width)
                alpha[i] = resize(generated.alpha[match[0]], rig.width)
        return ViewSet(rig=rig, rgb=rgb, alpha=alpha, depth=rendered.depth)


SYNCDREAMER = register(Backend("syncdreamer", "multiview", SyncDreamerSettings, SyncDreamerBackend,
                               models=lambda settings: ("syncdreamer",),
                               description="SyncDreamer's 16 generated views (our checkpoint-compatible code)"))
INITIAL_RENDERS = register(Backend(
    "initial_renders", "multiview", InitialRendersSettings,
    lambda settings, context: lambda gaussians, rig, photo: render_views(gaussians, rig),
    description="renders of the initial Gaussians, used as regularising targets (weight-free; no new information)"))
_BACKEND_TYPE, _BACKEND_DEFAULT = backend_field("multiview", fallback="initial_renders")


class MultiviewConfig(BaseModel):
    """Configuration of the multiview stage."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: _BACKEND_TYPE = Field(
        _BACKEND_DEFAULT, description="'auto' (SyncDreamer when its weights are present, else initial_renders) | "
        "'initial_renders': renders of the initial Gaussians from the 16-view rig, used as regularising targets "
        "(weight-free; no new information) | 'syncdreamer': generate the rig views from the photo; with its settings")
    image_size: int = Field(256, ge=16, le=1024, description="side of the square target views in pixels")
    input_weight: float = Field(4.0, gt=0, description="loss weight of the input photo's view (others weigh 1)")
    view_weight: float = Field(1.0, ge=0, description="loss weight of every generated view")
    camera_atol: float = Field(CAMERA_ATOL, gt=0, description="tolerance for deciding that the input camera is rig "
                                                                "view 0")


def camera_at_size(camera: Camera, size: int) -> Camera:
    """``camera`` with its intrinsics rescaled to a square image of ``size`` pixels."""
    if camera.width != camera.height:
        raise ValueError(f"the input camera must be square, got {camera.width}x{camera.height}")
    K = np.asarray(camera.K, dtype=np.float64).copy()
    K[:2] *= size / camera.width
    return Camera(np.asarray(camera.viewmat, dtype=np.float64), K, size, size)


def is_same_camera(a: Camera, b: Camera, atol: float) -> bool:
    """Whether two cameras have the same pose and (relative) intrinsics at the same image size."""
    if (a.width, a.height) != (b.width, b.height):
        return False
    return bool(np.allclose(a.viewmat, b.viewmat, atol=atol)
                and np.allclose(np.asarray(a.K) / a.width, np.asarray(b.K) / b.width, atol=atol))


def run(gaussians: Gaussians, photo: ObjectImage, input_camera: Camera, config: MultiviewConfig,
        backend: MultiviewBackend | None = None) -> ViewSet:
    """The target views: the input photo (view 0, weight ``input_weight``) and the 16 rig views of ``backend``
    (what the run's selection built), or else of ``config.backend`` selected and built here on the CPU."""
    size = config.image_size
    rig = syncdreamer16_rig(size)
    camera = camera_at_size(input_camera, size)
    keep = np.arange(1, len(rig)) if is_same_camera(camera, rig[0], config.camera_atol) else np.arange(len(rig))
    full_rig = CameraRig(np.concatenate([camera.viewmat[None], rig.viewmats[keep]]),
                         np.concatenate([camera.K[None], rig.Ks[keep]]), size, size)
    views = (backend or build_stage_backend("multiview", config))(gaussians, full_rig, photo)
    rgb, alpha = views.rgb.astype(np.float32).copy(), views.alpha.astype(np.float32).copy()
    rgb[INPUT_VIEW] = resize(photo.rgb, size)
    alpha[INPUT_VIEW] = resize(photo.alpha, size)
    weights = np.full(len(full_rig), config.view_weight, dtype=np.float32)
    weights[INPUT_VIEW] = config.input_weight
    return ViewSet(rig=full_rig, rgb=rgb, alpha=alpha, depth=views.depth, weights=weights)
