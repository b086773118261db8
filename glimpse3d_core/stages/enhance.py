"""Enhance stage: improve the generated views before fitting (e.g. diffusion img2img); the input view stays.

Weight-free backend ``identity`` returns the views unchanged. Model backends (added to :func:`make_backend`) must
keep the rig, the weights and view 0 (the input photo) as they are, and return straight RGB + alpha.
"""

from __future__ import annotations

from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from glimpse3d_core.types import ObjectImage, ViewSet


class EnhanceConfig(BaseModel):
    """Configuration of the enhance stage."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: Literal["identity"] = Field("identity", description="'identity': leave the views as they are")


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
    if config.backend == "identity":
        return IdentityBackend()
    raise ValueError(f"unknown enhance backend {config.backend!r}")


def run(views: ViewSet, photo: ObjectImage, config: EnhanceConfig) -> ViewSet:
    """The enhanced views (same rig, weights and input view)."""
    return make_backend(config).enhance(views, photo)
