"""Named pipeline variants (the ``variant`` partition dimension), read from the packaged ``ablations.yaml``.

A variant names a preset and overrides of the *variant-level* stages only (multiview onwards); the image-level
stages (segment, depth, reconstruct, gaussians) take the run's own preset, so they are computed once per image
and shared by every variant. A variant overriding an image-level stage is refused when the file is read.

The file: ``$GLIMPSE3D_ABLATIONS`` if set, else ``glimpse3d_assets/ablations.yaml`` (package data).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cache
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from glimpse3d_assets.package_data import ABLATIONS_FILE, package_file
from glimpse3d_core.chain import IMAGE_STAGES, STAGES
from glimpse3d_core.config import PipelineConfig

ABLATIONS_ENV = "GLIMPSE3D_ABLATIONS"
VARIANT_STAGES = tuple(s for s in STAGES if s not in IMAGE_STAGES)
"""PipelineConfig fields of the stages partitioned by (image, variant); those of IMAGE_STAGES are partitioned by
image alone (variants may not change them)."""
RUN_FIELDS = ("device", "seed", "input_camera")
"""Run-wide PipelineConfig fields: the same for every variant of a run."""


class Variant(BaseModel):
    """One named configuration: a preset (None = the run's) plus per-stage overrides of variant-level stages."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    description: str = ""
    preset: str | None = Field(None, description="preset of the variant-level stages (None: the run's preset)")
    overrides: dict[str, dict[str, Any]] = Field(default_factory=dict, description="stage -> {field: value}")

    def model_post_init(self, _context: Any) -> None:
        bad = sorted(set(self.overrides) - set(VARIANT_STAGES))
        if bad:
            raise ValueError(f"variants may only override {', '.join(VARIANT_STAGES)}; not {', '.join(bad)} "
                             "(image-level stages are shared by all variants)")


def ablations_path() -> Traversable:
    """``$GLIMPSE3D_ABLATIONS`` if set, else the packaged variants file."""
    env = os.environ.get(ABLATIONS_ENV)
    return Path(env).resolve() if env else package_file(ABLATIONS_FILE)


@cache
def _load(path: Traversable) -> dict[str, Variant]:
    if not path.is_file():
        raise FileNotFoundError(f"ablations file {path} not found (set {ABLATIONS_ENV})")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    variants = {name: Variant.model_validate(spec or {}) for name, spec in (data.get("variants") or {}).items()}
    if "default" not in variants:
        raise ValueError(f"{path}: needs a variant named 'default'")
    return variants


def load_variants(path: Path | None = None) -> dict[str, Variant]:
    """Every variant by name (``default`` first as written in the file)."""
    return _load(Path(path).resolve() if path else ablations_path())


def get_variant(name: str, path: Path | None = None) -> Variant:
    variants = load_variants(path)
    if name not in variants:
        raise ValueError(f"unknown variant {name!r}; choose one of {', '.join(variants)}")
    return variants[name]


def build_config(preset: str, *overrides: Mapping[str, Any]) -> PipelineConfig:
    """Preset ``preset`` of PipelineConfig with the nested ``overrides`` applied in order (validated; a
    ConfigError, a ValueError, names what is wrong)."""
    config = PipelineConfig.from_preset(preset)
    for layer in overrides:
        config = config.with_overrides(dict(layer))
    return config
