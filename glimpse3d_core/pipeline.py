"""The whole chain in one process: photo -> Gaussians, mesh, turntable and metrics in OUT/<name>/.

The stages, their backends and the metrics record are :mod:`glimpse3d_core.chain`'s (the Dagster assets run the
same chain, one stage per asset); this module only calls them in order, times them and reports progress. A bad
image raises :class:`PipelineError` (a ValueError) naming the image and the stage, and nothing is left half-written
(every export is atomic).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from glimpse3d_core.chain import STAGES, Chain, run_record
from glimpse3d_core.config import PipelineConfig
from glimpse3d_core.io.images import load_image
from glimpse3d_core.naming import image_key
from glimpse3d_core.stages import optimize, refine
from glimpse3d_core.timing import timed
from glimpse3d_core.types import Gaussians, ObjectImage, ViewSet

__all__ = ["STAGES", "PipelineError", "PipelineResult", "ProgressCallback", "run_pipeline"]

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


def run_pipeline(image_path: str | Path, out_dir: str | Path, config: PipelineConfig | None = None, *,
                 progress: ProgressCallback | None = None, name: str | None = None) -> PipelineResult:
    """Run every stage on one image and write ``out_dir/<name>/`` (name: the file's stem made safe)."""
    config = config or PipelineConfig()
    image_path = Path(image_path)
    name = name or image_key(image_path.name)
    chain = Chain.prepare(config)  # a model backend without weights fails before any work
    timings: dict[str, float] = {}

    @contextmanager
    def stage(stage_name: str) -> Iterator[None]:
        if progress:
            progress(stage_name, "start", 0.0)
        try:
            with timed(timings, stage_name):
                yield
        except ValueError as exc:
            raise PipelineError(f"{image_path.name}: {stage_name} failed: {exc}") from exc
        if progress:
            progress(stage_name, "end", timings[stage_name])

    with stage("segment"):
        rgb, alpha = load_image(image_path)
        seg = chain.segment(rgb, alpha, name)
    with stage("depth"):
        depth_map = chain.depth(seg.image)
    with stage("reconstruct"):
        mesh = chain.reconstruct(seg.image, depth_map, seg.camera)
    with stage("gaussians"):
        initial = chain.gaussians(mesh)
    with stage("multiview"):
        views = chain.multiview(initial, seg.image, seg.camera)
    with stage("enhance"):
        views = chain.enhance(views, seg.image)
    with stage("optimize"):
        fitted = chain.optimize(initial, views)
    with stage("refine"):
        refined = chain.refine(fitted.gaussians, views)
    with stage("export"):
        record = run_record(
            image=image_path.name, alpha_source=seg.alpha_source, backends=chain.backend_names,
            device=str(chain.context.device), preset=config.preset, fitted=fitted.summary(),
            refine_counts={**refined.counts, **refined.scores},
            timings=timings)  # timings filled in place; export's is added once it ran
        exported = chain.export(refined.gaussians, views, target := Path(out_dir) / name, record)
    timings["total"] = sum(timings[s] for s in STAGES)
    return PipelineResult(
        name=name, out_dir=target, files=exported.files, metrics=exported.metrics, timings=timings,
        initial_gaussians=initial, gaussians=refined.gaussians, views=views, image=seg.image,
        optimize=fitted, refine=refined,
    )
