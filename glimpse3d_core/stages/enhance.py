"""Enhance stage: improve the generated views before fitting (e.g. diffusion img2img); the input view stays.

Weight-free backend ``identity`` returns the views unchanged; ``sdxl-lightning`` (``auto`` takes it when its weights
are present) runs SDXL-Lightning img2img. Every backend keeps the rig, the weights and view 0 (the input photo) as
they are, and returns straight RGB + alpha.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from glimpse3d_core.backends import sdxl_enhance  # noqa: F401  (registers the 'sdxl-lightning' backend)
from glimpse3d_core.backends.base import Backend, BackendSettings, backend_field, build_stage_backend, register
from glimpse3d_core.types import ObjectImage, ViewSet

EnhanceBackend = Callable[[ViewSet, ObjectImage], ViewSet]
"""What an enhance backend's ``build`` returns: ``(views, photo) -> views`` of the same rig, weights and view 0."""


class IdentitySettings(BackendSettings):
    """Enhance backend ``identity`` (weight-free): the views as they are."""

    name: Literal["identity"] = "identity"


IDENTITY = register(Backend("identity", "enhance", IdentitySettings,
                            lambda settings, context: lambda views, photo: views,
                            description="no change (weight-free)"))
_BACKEND_TYPE, _BACKEND_DEFAULT = backend_field("enhance", fallback="identity")


class EnhanceConfig(BaseModel):
    """Configuration of the enhance stage."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: _BACKEND_TYPE = Field(
        _BACKEND_DEFAULT, description="'auto' (SDXL-Lightning when its weights are present, else identity) | "
        "'identity' | 'sdxl-lightning': SDXL-Lightning img2img (+ depth ControlNet); with its settings")


def run(views: ViewSet, photo: ObjectImage, config: EnhanceConfig, backend: EnhanceBackend | None = None) -> ViewSet:
    """The enhanced views (same rig, weights and input view), by ``backend`` (what the run's selection built), or
    else by ``config.backend`` selected and built here on the CPU."""
    return (backend or build_stage_backend("enhance", config))(views, photo)
