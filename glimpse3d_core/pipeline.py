"""The whole weight-free chain in one process: photo -> Gaussians, mesh, turntable and metrics in OUT/<name>/.

segment -> depth -> reconstruct -> gaussians_from_mesh -> multiview -> enhance -> optimize -> refine -> export.
Each stage is the pure ``run`` of its module (the Dagster assets wrap the same functions); this module only
chains them, times them and reports progress. A bad image raises :class:`PipelineError` (a ValueError) naming
the image and the stage, and nothing is left half-written (every export is atomic).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from glimpse3d_core.backends.selection import check_backends_available
from glimpse3d_core.config import PipelineConfig
from glimpse3d_core.io.images import load_image
from glimpse3d_core.naming import image_key
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
from glimpse3d_core.types import DepthMap, Gaussians, ObjectImage, ViewSet

STAGES = ("segment", "depth", "reconstruct", "gaussians", "multiview", "enhance", "optimize", "refine", "export")
"""Stage names in order, as the progress callback and the timings report them."""

ProgressCallback = Callable[[str, Literal["start", "end"], float], None]
"""Called with (stage, "start" | "end", seconds so far in that stage: 0 at start)."""


class PipelineError(ValueError):
    """One image could not be processed; the message names the image and the stage."""


@dataclass
class PipelineResult:
    """What one run produced: the output folder and files, metrics, timings and the intermediate results."""

    name: str
    out_dir: Path
    files: dict[str, Path]
    metrics: dict
    timings: dict[str, float]
    initial_gaussians: Gaussians
    gaussians: Gaussians
    views: ViewSet
    image: ObjectImage
    optimize: optimize.OptimizeResult
    refine: refine.RefineResult
    extra: dict = field(default_factory=dict)


def estimate_view_depths(views: ViewSet, config: depth.DepthConfig) -> list[DepthMap]:
    """The depth backend's estimate for every view's image (what MVCRM compares rendered depth with)."""
    return [depth.run(ObjectImage(views.rgb[i], views.alpha[i], f"view{i}"), config) for i in range(len(views))]


def run_pipeline(image_path: str | Path, out_dir: str | Path, config: PipelineConfig | None = None, *,
                 progress: ProgressCallback | None = None, name: str | None = None) -> PipelineResult:
    """Run every stage on one image and write ``out_dir/<name>/`` (name: the file's stem made safe)."""
    config = config or PipelineConfig()
    image_path = Path(image_path)
    name = name or image_key(image_path.name)
    target = Path(out_dir) / name
    device = config.resolved_device()
    backends = check_backends_available(config)  # a model backend without weights fails before any work
    timings: dict[str, float] = {}

    @contextmanager
    def stage(stage_name: str) -> Iterator[None]:
        if progress:
            progress(stage_name, "start", 0.0)
        start = time.perf_counter()
        try:
            yield
        except ValueError as exc:
            raise PipelineError(f"{image_path.name}: {stage_name} failed: {exc}") from exc
        timings[stage_name] = time.perf_counter() - start
        if progress:
            progress(stage_name, "end", timings[stage_name])

    with stage("segment"):
        rgb, alpha = load_image(image_path)
        seg = segment.run(rgb, alpha, config.segment, camera_spec=config.input_camera, name=name)
    with stage("depth"):
        depth_map = depth.run(seg.image, config.depth)
    with stage("reconstruct"):
        mesh = reconstruct.run(seg.image, depth_map, seg.camera, config.reconstruct)
    with stage("gaussians"):
        initial = gaussians_from_mesh.run(mesh, config.gaussians).to(device)
    with stage("multiview"):
        views = multiview.run(initial, seg.image, seg.camera, config.multiview)
    with stage("enhance"):
        views = enhance.run(views, seg.image, config.enhance)
    with stage("optimize"):
        fitted = optimize.run(initial, views, config.optimize, seed=config.seed, device=device)
    with stage("refine"):
        estimates = estimate_view_depths(views, config.depth)  # judge (a) and score depth consistency
        refined = refine.run(fitted.gaussians, views, estimates, config.refine, config.optimize, seed=config.seed)
    with stage("export"):
        extra = {
            "image": image_path.name,
            "alpha_source": seg.alpha_source,
            "backends": {stage_name: choice.backend for stage_name, choice in backends.items()},
            "device": str(device),
            "preset": config.preset,
            "optimize_iterations_per_second": fitted.iterations_per_second,
            "optimize_final_loss": fitted.losses[-1] if fitted.losses else None,
            "gaussians_initial": fitted.num_initial,
            "gaussians_optimized": fitted.num_final,
            "refine": {**refined.counts, **refined.scores},
            "timings": timings,  # filled in place; export is added below once it has run
        }
        exported = export.run(refined.gaussians, views, target, config.export, extra_metrics=extra)
    timings["total"] = float(np.sum([timings[s] for s in STAGES]))
    return PipelineResult(
        name=name, out_dir=target, files=exported.files, metrics=exported.metrics, timings=timings,
        initial_gaussians=initial, gaussians=refined.gaussians, views=views, image=seg.image,
        optimize=fitted, refine=refined,
    )
