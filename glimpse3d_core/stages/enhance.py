"""Enhance stage: improve the generated views before fitting (e.g. diffusion img2img); the input view stays.

Weight-free backend ``identity`` returns the views unchanged. Model backends (added to :func:`make_backend`) must
keep the rig, the weights and view 0 (the input photo) as they are, and return straight RGB + alpha.
"""

from __future__ import annotations

from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from glimpse3d_core.backends.sdxl_enhance import SdxlLightningEnhancer, SdxlSettings
from glimpse3d_core.backends.selection import select_backend
from glimpse3d_core.types import ObjectImage, ViewSet


class EnhanceConfig(BaseModel):
    """Configuration of the enhance stage."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: Literal["identity", "sdxl-lightning", "auto"] = Field(
        "identity", description="'identity': leave the views as they are | 'sdxl-lightning': SDXL-Lightning img2img "
        "(+ depth ControlNet) | 'auto': SDXL-Lightning when its weights are present")
    sdxl: SdxlSettings = Field(SdxlSettings(), description="settings of the 'sdxl-lightning' backend")


class EnhanceBackend(Protocol):
    """Turns the target views into better target views of the same rig."""

    name: str

    def enhance(self, views: ViewSet, photo: ObjectImage) -> ViewSet: ...


class IdentityBackend:
    """Weight-free: no change."""

    name = "identity"

    def enhance(self, views: ViewSet, photo: ObjectImage) -> ViewSet:
        return views


def make_backend(config: EnhanceConfig) -> EnhanceBackend:
    """The backend ``config.backend`` names."""
    choice = select_backend("enhance", config)
    if choice.backend == "sdxl-lightning":
        return SdxlLightningEnhancer(config.sdxl)
    if choice.backend == "identity":
        return IdentityBackend()
    raise ValueError(f"unknown enhance backend {config.backend!r}")


def run(views: ViewSet, photo: ObjectImage, config: EnhanceConfig) -> ViewSet:
    """The enhanced views (same rig, weights and input view)."""
    return make_backend(config).enhance(views, photo)
