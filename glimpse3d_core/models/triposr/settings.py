"""Light-weight settings of the TripoSR backend: importable without transformers (stage configs nest them)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from glimpse3d_core.models.triposr.mesh import DEFAULT_RESOLUTION, DENSITY_THRESHOLD
from glimpse3d_core.models.triposr.preprocess import PreprocessConfig
from glimpse3d_core.models.triposr.renderer import DEFAULT_CHUNK_POINTS

MODEL_ID = "triposr"
"""Registry id of the released weights."""


class TripoSRReconstructConfig(BaseModel):
    """Inference settings of the TripoSR backend (defaults as the original's CLI)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    preprocess: PreprocessConfig = PreprocessConfig()
    mc_resolution: int = Field(DEFAULT_RESOLUTION, ge=8, le=1024, description="marching-cubes samples per axis")
    density_threshold: float = Field(DENSITY_THRESHOLD, gt=0, description="iso-level on the activated density")
    chunk_points: int = Field(DEFAULT_CHUNK_POINTS, ge=1, description="field points decoded per batch")
