"""The stage chain, once: stage order, backend selection and building, timing, and the metrics record.

segment -> depth -> reconstruct -> gaussians -> multiview -> enhance -> optimize -> refine -> export.

A :class:`Chain` is one run's configuration with its :class:`~glimpse3d_core.backends.base.RunContext` and the
backend :class:`~glimpse3d_core.backends.base.Selection` of every stage, made once before any work. Each method runs
one stage's pure ``run`` with the backend built for it (built on first use, once per chain) on the context's device.
:func:`glimpse3d_core.pipeline.run_pipeline` calls the methods in order in one process; the Dagster assets call one
method each, from a chain rebuilt in their step with the selections the run recorded (:meth:`Chain.selection_record`,
:meth:`Chain.from_record`), so both compute the same thing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from glimpse3d_core.backends.base import RunContext, Selection, get_backend, select_all
from glimpse3d_core.config import PipelineConfig
from glimpse3d_core.stages import (
    depth,
    enhance,
    export,
    gaussians_from_mesh,
    multiview,
    optimize,
    reconstruct,
    refine,
    segment,
)
from glimpse3d_core.types import Camera, DepthMap, Gaussians, MeshAsset, ObjectImage, ViewSet

STAGES = ("segment", "depth", "reconstruct", "gaussians", "multiview", "enhance", "optimize", "refine", "export")
"""Stage names in order: the keys of ``timings`` in metrics.json and MLflow."""
IMAGE_STAGES = STAGES[:4]
"""Stages computed once per image (shared by every variant); the rest run per (image, variant)."""
SELECTED_STAGES = ("segment", "depth", "reconstruct", "multiview", "enhance")
"""Stages whose config has a ``backend`` (selected once per run)."""


def run_record(*, image: str, alpha_source: str | None, backends: dict[str, str], device: str, preset: str,
               fitted: dict[str, Any], refine_counts: dict[str, int], timings: dict[str, float],
               variant: str | None = None) -> dict[str, Any]:
    """The run's entries of metrics.json beside the quality metrics (same keys from the pipeline and the graph);
    ``fitted``: ``iterations_per_second``, ``final_loss``, ``num_initial``, ``num_final`` of the optimisation."""
    return {
        "image": image, **({"variant": variant} if variant is not None else {}),
        "alpha_source": alpha_source, "backends": backends, "device": device, "preset": preset,
        "optimize_iterations_per_second": fitted.get("iterations_per_second"),
        "optimize_final_loss": fitted.get("final_loss"),
        "gaussians_initial": fitted.get("num_initial"), "gaussians_optimized": fitted.get("num_final"),
        "refine": refine_counts, "timings": timings,
    }


@dataclass
class Chain:
    """One run's stages with their selected backends (see the module docstring)."""

    config: PipelineConfig
    context: RunContext
    selections: dict[str, Selection]
    _built: dict[str, Callable[..., Any]] = field(default_factory=dict, repr=False)

    @classmethod
    def prepare(cls, config: PipelineConfig, context: RunContext | None = None,
                stages: tuple[str, ...] = SELECTED_STAGES) -> Chain:
        """Resolve the context and select the backends of ``stages`` before any work (a named model backend
        without weights raises one MissingWeightsError naming every missing model and the download command)."""
        context = context or config.context()
        configs = {s: getattr(config, s) for s in stages}
        return cls(config, context, select_all(configs, context.store))

    @classmethod
    def from_record(cls, config: PipelineConfig, record: dict[str, dict], context: RunContext | None = None) -> Chain:
        """A chain whose selections are the ``record`` an earlier :meth:`prepare` made (no new selection)."""
        selections = {stage: Selection(stage, get_backend(stage, data["name"]).settings.model_validate(data),
                                       "recorded")
                      for stage, data in record.items()}
        return cls(config, context or config.context(), selections)

    def selection_record(self) -> dict[str, dict]:
        """{stage: the selected backend's settings} (JSON-able): what :meth:`from_record` takes back."""
        return {stage: choice.settings.model_dump(mode="json") for stage, choice in self.selections.items()}

    @property
    def backend_names(self) -> dict[str, str]:
        return {stage: choice.settings.name for stage, choice in self.selections.items()}

    def backend(self, stage: str) -> Callable[..., Any]:
        """The built backend of ``stage`` (built on the context's device on first use)."""
        if stage not in self._built:
            if stage not in self.selections:
                raise KeyError(f"no backend was selected for stage {stage!r} in this run")
            self._built[stage] = self.selections[stage].build(self.context)
        return self._built[stage]

    # The stages, in order.
    def segment(self, rgb: np.ndarray, alpha: np.ndarray | None, name: str) -> segment.SegmentOutput:
        return segment.run(rgb, alpha, self.config.segment, self.config.input_camera, name=name,
                           backend=self.backend("segment"), backend_name=self.backend_names["segment"])

    def depth(self, image: ObjectImage) -> DepthMap:
        return depth.run(image, self.config.depth, backend=self.backend("depth"))

    def reconstruct(self, image: ObjectImage, depth_map: DepthMap, camera: Camera) -> MeshAsset:
        return reconstruct.run(image, depth_map, camera, self.config.reconstruct, backend=self.backend("reconstruct"))

    def gaussians(self, mesh: MeshAsset) -> Gaussians:
        return gaussians_from_mesh.run(mesh, self.config.gaussians).to(self.context.device)

    def multiview(self, initial: Gaussians, image: ObjectImage, camera: Camera) -> ViewSet:
        return multiview.run(initial.to(self.context.device), image, camera, self.config.multiview,
                             backend=self.backend("multiview"))

    def enhance(self, views: ViewSet, image: ObjectImage) -> ViewSet:
        return enhance.run(views, image, self.config.enhance, backend=self.backend("enhance"))

    def optimize(self, initial: Gaussians, views: ViewSet) -> optimize.OptimizeResult:
        return optimize.run(initial, views, self.config.optimize, seed=self.context.seed, device=self.context.device)

    def refine(self, fitted: Gaussians, views: ViewSet) -> refine.RefineResult:
        """MVCRM, its re-fit and gate; the run's depth backend run on every view's image judges its depth check
        (when on) and scores depth consistency (always)."""
        estimate = self.backend("depth")
        estimates = [estimate(ObjectImage(views.rgb[i], views.alpha[i], f"view{i}")) for i in range(len(views))]
        return refine.run(fitted.to(self.context.device), views, estimates, self.config.refine, self.config.optimize,
                          seed=self.context.seed)

    def export(self, gaussians: Gaussians, views: ViewSet, out_dir: str | Path,
               record: dict[str, Any]) -> export.ExportResult:
        return export.run(gaussians.to(self.context.device), views, out_dir, self.config.export,
                          extra_metrics=record)
