"""The whole pipeline's configuration: one field per stage config, plus input camera, device, preset and seed.

Presets (:meth:`PipelineConfig.from_preset`):

* ``fast`` (the default; sized for a 2-core CPU): 8k Gaussians, 256 px target views fitted at 256 px, 150 steps
  of 3 views without densification, SH degree 0, 96³ mesh grid from 26 depth renders of 128 px, 36-frame
  turntable. (Fitting at 128 px and scoring at 256 px lost 4-5 dB on the input view: research/results.)
* ``quality`` (for a CUDA GPU): 20k Gaussians, 256 px target views, 2,000 steps of 4 views with gsplat's
  densification, SH degree 3, 160³ mesh grid, 120-frame turntable.
* ``smoke``: the smallest sizes every stage accepts (64 px canvas, 500 Gaussians, 3 steps): for checking that
  the orchestration works (tests, scaling benchmarks), not for results.

Variants and experiments load a preset and override fields from a nested dict (:meth:`PipelineConfig.load`,
:meth:`PipelineConfig.with_overrides`); :meth:`PipelineConfig.flat_params` lists every field as a string for
MLflow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from glimpse3d_core.input_camera import CANONICAL, InputCameraSpec
from glimpse3d_core.input_camera import preset as input_camera_preset
from glimpse3d_core.stages.depth import DepthConfig
from glimpse3d_core.stages.enhance import EnhanceConfig
from glimpse3d_core.stages.export import ExportConfig
from glimpse3d_core.stages.gaussians_from_mesh import GaussiansFromMeshConfig
from glimpse3d_core.stages.multiview import MultiviewConfig
from glimpse3d_core.stages.optimize import OptimizeConfig
from glimpse3d_core.stages.reconstruct import ReconstructConfig
from glimpse3d_core.stages.refine import RefineConfig
from glimpse3d_core.stages.segment import SegmentConfig

PresetName = Literal["fast", "quality", "smoke"]

FAST_NUM_GAUSSIANS = 8_000
"""Initial Gaussians of the default (fast, CPU) configuration."""

PRESETS: dict[str, dict[str, Any]] = {
    "fast": {},
    "quality": {
        "gaussians": {"num_gaussians": 20_000},
        "optimize": {"iterations": 2_000, "image_size": None, "views_per_step": 4, "densify": True,
                     "sh_degree": 3, "sh_degree_interval": 500, "refine_start_iter": 200, "refine_every": 100},
        "export": {"mesh_resolution": 160, "mesh_view_size": 256, "mesh_views_per_ring": 8, "turntable_frames": 120},
    },
    # The smallest sizes every stage accepts: checks that the orchestration works (tests, scaling benchmarks),
    # not results anyone should look at.
    "smoke": {
        "segment": {"canvas_size": 64, "matting_max_side": 128},
        "reconstruct": {"resolution": 24},
        "gaussians": {"num_gaussians": 500},
        "multiview": {"image_size": 32},
        "optimize": {"iterations": 3, "views_per_step": 1},
        "export": {"mesh_resolution": 16, "mesh_view_size": 32, "mesh_views_per_ring": 3, "turntable_frames": 2,
                   "turntable_size": 32, "preview_frames": 2},
    },
}
"""Overrides each preset applies on top of the defaults (``fast`` is the defaults: the stage configs' own
field defaults, with :data:`FAST_NUM_GAUSSIANS` initial Gaussians)."""


class ConfigError(ValueError):
    """A configuration that cannot be loaded (unknown preset or field, wrong type)."""


def _merge(base: dict, overrides: dict) -> dict:
    """Recursive dict merge (overrides win; nested dicts merge)."""
    out = dict(base)
    for key, value in overrides.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


class PipelineConfig(BaseModel):
    """Every knob of one pipeline run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    preset: PresetName = Field("fast", description="name of the preset the stage settings started from")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="'auto': CUDA when available, else CPU")
    seed: int = Field(0, description="seed of the optimisation (view sampling)")
    input_camera: InputCameraSpec = Field(CANONICAL, description="the photo's camera (a preset name or fields)")
    segment: SegmentConfig = SegmentConfig()
    depth: DepthConfig = DepthConfig()
    reconstruct: ReconstructConfig = ReconstructConfig()
    gaussians: GaussiansFromMeshConfig = GaussiansFromMeshConfig(num_gaussians=FAST_NUM_GAUSSIANS)
    multiview: MultiviewConfig = MultiviewConfig()
    enhance: EnhanceConfig = EnhanceConfig()
    optimize: OptimizeConfig = OptimizeConfig()
    refine: RefineConfig = RefineConfig()
    export: ExportConfig = ExportConfig()

    @field_validator("input_camera", mode="before")
    @classmethod
    def _camera_by_name(cls, value: Any) -> Any:
        return input_camera_preset(value) if isinstance(value, str) else value

    @classmethod
    def from_preset(cls, name: str) -> PipelineConfig:
        """The configuration of preset ``name`` (``fast``, ``quality`` or ``smoke``)."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls.model_validate({**PRESETS[name], "preset": name})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PipelineConfig:
        """A preset (``data['preset']``, default ``fast``) with the rest of ``data`` as nested overrides."""
        data = dict(data or {})
        return cls.from_preset(data.pop("preset", "fast")).with_overrides(data)

    @classmethod
    def load(cls, path: str | Path) -> PipelineConfig:
        """:meth:`from_dict` of a YAML or JSON file."""
        path = Path(path)
        try:
            text = path.read_text()
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (OSError, ValueError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read pipeline config {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        return cls.from_dict(data)

    def with_overrides(self, overrides: dict[str, Any] | None) -> PipelineConfig:
        """A copy with nested ``overrides`` applied (``{"optimize": {"iterations": 50}}``), validated."""
        if not overrides:
            return self
        if "preset" in overrides and overrides["preset"] != self.preset:
            base = PipelineConfig.from_preset(overrides["preset"]).model_dump()
            overrides = {k: v for k, v in overrides.items() if k != "preset"}
        else:
            base = self.model_dump()
        try:
            return PipelineConfig.model_validate(_merge(base, overrides))
        except ValueError as exc:
            raise ConfigError(f"invalid pipeline config override: {exc}") from exc

    def resolved_device(self) -> torch.device:
        """The torch device this configuration runs on."""
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device 'cuda' was asked for but CUDA is not available")
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def flat_params(self) -> dict[str, str]:
        """Every field as ``{"optimize.iterations": "150", ...}`` (MLflow params)."""
        out: dict[str, str] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            else:
                out[prefix] = str(value)

        walk("", self.model_dump(mode="json"))
        return out
