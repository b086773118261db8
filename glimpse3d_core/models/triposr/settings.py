"""Light-weight settings of the TripoSR backend: importable without transformers (stage configs nest them)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from glimpse3d_core.backends.base import BackendSettings
from glimpse3d_core.models.triposr.mesh import DEFAULT_RESOLUTION, DENSITY_THRESHOLD
from glimpse3d_core.models.triposr.preprocess import PreprocessConfig
from glimpse3d_core.models.triposr.renderer import DEFAULT_CHUNK_POINTS

MODEL_ID = "triposr"
"""Registry id of the released weights."""


class TripoSRReconstructConfig(BackendSettings):
    """Reconstruct backend ``triposr``: inference settings (defaults as the original's CLI)."""

    name: Literal["triposr"] = "triposr"
    preprocess: PreprocessConfig = PreprocessConfig()
    mc_resolution: int = Field(DEFAULT_RESOLUTION, ge=8, le=1024, description="marching-cubes samples per axis")
    density_threshold: float = Field(DENSITY_THRESHOLD, gt=0, description="iso-level on the activated density")
    chunk_points: int = Field(DEFAULT_CHUNK_POINTS, ge=1, description="field points decoded per batch")
