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
:meth:`PipelineConfig.with_overrides`) or from ``a.b.c=value`` items (:func:`parse_assignments`, the CLI's
``--set``); every level is frozen and forbids unknown fields, and an unknown field is a :class:`ConfigError` naming
it and the valid names. Switching a stage's ``backend`` to another name keeps the settings that backend already
had under ``auto`` (``--set depth.backend=inflation`` runs inflation with ``auto``'s ``fallback`` settings).
:meth:`PipelineConfig.flat_params` lists every field as a string for MLflow; :meth:`PipelineConfig.context`
resolves the run context (device, seed, model store) once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from glimpse3d_core.backends.base import RunContext
from glimpse3d_core.errors import ConfigError
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
        "segment": {"canvas_size": 64, "backend": {"fallback": {"matting_max_side": 128}}},
        "reconstruct": {"backend": {"fallback": {"resolution": 24}}},
        "gaussians": {"num_gaussians": 500},
        "multiview": {"image_size": 32},
        "optimize": {"iterations": 3, "views_per_step": 1},
        "export": {"mesh_resolution": 16, "mesh_view_size": 32, "mesh_views_per_ring": 3, "turntable_frames": 2,
                   "turntable_size": 32, "preview_frames": 2},
    },
}
"""Overrides each preset applies on top of the defaults (``fast`` is the defaults: the stage configs' own
field defaults, with :data:`FAST_NUM_GAUSSIANS` initial Gaussians)."""


__all__ = ["ConfigError", "PipelineConfig", "parse_assignments"]


def _merge(base: dict, overrides: dict) -> dict:
    """Recursive dict merge (overrides win; nested dicts merge). A backend switched to another name (a bare name or
    a dict with another ``name``) starts from the settings that name has inside ``base`` (``auto``'s ``model`` or
    ``fallback``), else from its defaults."""
    if isinstance(overrides.get("name"), str) and overrides["name"] != base.get("name"):
        base = next((v for v in base.values() if isinstance(v, dict) and v.get("name") == overrides["name"]), {})
    out = dict(base)
    for key, value in overrides.items():
        current = out.get(key)
        if isinstance(value, str) and isinstance(current, dict) and "name" in current:
            value = {"name": value}  # a bare backend name
        out[key] = _merge(current, value) if isinstance(value, dict) and isinstance(current, dict) else value
    return out


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """``["optimize.iterations=50", "depth.backend=dpt", "depth.backend.model=dpt-large"]`` -> the nested overrides
    dict (values are YAML scalars or flow collections; a bare name and fields of the same key combine into
    ``{"name": ..., **fields}``)."""
    overrides: dict[str, Any] = {}
    for item in items:
        path, sep, text = item.partition("=")
        keys = [k.strip() for k in path.split(".")]
        if not sep or not all(keys):
            raise ConfigError(f"expected FIELD.PATH=VALUE (e.g. optimize.iterations=50), got {item!r}")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{item!r}: the value is not valid YAML: {exc}") from exc
        node = overrides
        for key in keys[:-1]:
            if isinstance(node.get(key), str):  # a backend named earlier, now given settings
                node[key] = {"name": node[key]}
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{item!r}: {key} is set to a value and to fields at once")
        leaf = keys[-1]
        if isinstance(node.get(leaf), dict) and isinstance(value, str):  # a backend named after its settings
            node[leaf]["name"] = value
        else:
            node[leaf] = value
    return overrides


def _field_names(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names valid at ``loc`` (the parent of an unknown field) inside ``model``."""
    node: Any = model
    for key in loc:
        fields = getattr(node, "model_fields", None)
        if fields is not None and key in fields:
            node = fields[key].annotation
            continue
        members = [m for m in getattr(node, "__args__", ()) + getattr(getattr(node, "__origin__", None), "__args__", ())
                   if isinstance(m, type) and issubclass(m, BaseModel)]
        match = [m for m in members if key in getattr(m.model_fields.get("name"), "annotation", ()).__args__] \
            if members else []
        node = match[0] if match else None
        if node is None:
            return []
    return sorted(getattr(node, "model_fields", {}))


def _explain(error: ValidationError, model: type[BaseModel]) -> str:
    """A validation error as a user reads it: unknown fields named with the valid ones."""
    lines = []
    for item in error.errors():
        loc = ".".join(str(p) for p in item["loc"])
        if item["type"] == "extra_forbidden":
            valid = _field_names(model, tuple(p for p in item["loc"][:-1] if isinstance(p, str)))
            lines.append(f"unknown field {loc!r}" + (f"; valid names: {', '.join(valid)}" if valid else ""))
        else:
            lines.append(f"{loc}: {item['msg']}")
    return "; ".join(lines)


class PipelineConfig(BaseModel):
    """Every knob of one pipeline run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    preset: PresetName = Field("fast", description="name of the preset the stage settings started from")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="'auto': CUDA when available, else CPU")
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = Field(
        "auto", description="inference dtype of the model backends ('auto': float16 on CUDA, float32 on CPU); the "
        "optimisation always runs in float32")
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
        return cls._validated(_merge(cls().model_dump(), {**PRESETS[name], "preset": name}))

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
        return PipelineConfig._validated(_merge(base, overrides))

    @classmethod
    def _validated(cls, data: dict[str, Any]) -> PipelineConfig:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"invalid pipeline config: {_explain(exc, PipelineConfig)}") from exc
        except ValueError as exc:
            raise ConfigError(f"invalid pipeline config: {exc}") from exc

    def context(self, device: str | None = None) -> RunContext:
        """The run context (device, dtype, seed, model store), resolved once per run or step; ``device`` (e.g. the
        ``cuda:N`` a GPU lease gave) overrides the configured one."""
        return RunContext.resolve(device or self.device, self.seed, dtype=self.dtype)

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
