"""Variant-level stages (partitioned by image x variant): multiview -> enhanced_views -> optimized_gaussians ->
refined_gaussians -> exports -> quality_metrics (logged to MLflow). Thin wrappers over ``glimpse3d_core``: the
glue between stages is :mod:`glimpse3d_core.pipeline`'s, so the graph and ``run_pipeline`` compute the same."""


import json
import tempfile
from pathlib import Path

from dagster import AssetExecutionContext, MetadataValue, Output, asset

from glimpse3d_assets.assets.common import (
    BACKENDS_KEY,
    CPU_TAGS,
    GPU_POOL,
    GPU_TAGS,
    IMAGE_LEVEL_ASSETS,
    SECONDS_KEY,
    STAGE_NAMES,
    check_backends,
    image_of,
    latest_metadata,
    stage,
    variant_of,
)
from glimpse3d_assets.checks import gaussian_checks, gaussian_specs, psnr_check, psnr_spec
from glimpse3d_assets.codecs import OutputFolder
from glimpse3d_assets.io_manager import markdown_thumbnail
from glimpse3d_assets.partitions import image_variant_partitions
from glimpse3d_assets.resources import MlflowTracker, PipelineSettings
from glimpse3d_core import pipeline
from glimpse3d_core.stages import enhance as enhance_stage
from glimpse3d_core.stages import export as export_stage
from glimpse3d_core.stages import multiview as multiview_stage
from glimpse3d_core.stages import optimize as optimize_stage
from glimpse3d_core.stages import refine as refine_stage
from glimpse3d_core.stages.segment import SegmentOutput
from glimpse3d_core.types import Gaussians, ViewSet

GROUP = "variant_stages"
MLFLOW_ARTIFACTS = ("preview.png", "turntable.mp4", "metrics.json")
KEY_NUMBERS = ("input_psnr", "input_ssim", "silhouette_iou", "depth_variance", "num_gaussians", "mesh_faces",
               "timings.optimize", "timings.export")
"""Metrics shown in the Dagster UI's materialisation metadata (all of them go to metrics.json and MLflow)."""
VARIANT_KW = {"partitions_def": image_variant_partitions, "group_name": GROUP}


@asset(**VARIANT_KW, op_tags=GPU_TAGS, pool=GPU_POOL, kinds={"pytorch"})
def multiview(context: AssetExecutionContext, initial_gaussians: Gaussians, foreground: SegmentOutput,
              settings: PipelineSettings) -> Output[ViewSet]:
    """The target views: the input photo and the 16-view rig. First of all, the variant's backends are resolved: a
    model backend without weights fails before any work."""
    cfg = settings.variant_config(variant_of(context))
    backends = check_backends(context, cfg)
    with stage(context, "multiview") as timing:
        out = multiview_stage.run(initial_gaussians.to(str(cfg.resolved_device())), foreground.image,
                                  foreground.camera, cfg.multiview)
    return Output(out, metadata={"views": len(out), "view_px": out.rig.width, BACKENDS_KEY: backends,
                                 SECONDS_KEY: timing[SECONDS_KEY]})


@asset(**VARIANT_KW, op_tags=GPU_TAGS, pool=GPU_POOL, kinds={"pytorch"})
def enhanced_views(context: AssetExecutionContext, multiview: ViewSet, foreground: SegmentOutput,
                   settings: PipelineSettings) -> Output[ViewSet]:
    """The target views after enhancement (identity without model weights)."""
    cfg = settings.variant_config(variant_of(context))
    with stage(context, "enhance") as timing:
        out = enhance_stage.run(multiview, foreground.image, cfg.enhance)
    return Output(out, metadata={"backend": cfg.enhance.backend, SECONDS_KEY: timing[SECONDS_KEY]})


@asset(**VARIANT_KW, op_tags=GPU_TAGS, pool=GPU_POOL, kinds={"pytorch"},
       check_specs=gaussian_specs("optimized_gaussians"))
def optimized_gaussians(context: AssetExecutionContext, initial_gaussians: Gaussians, enhanced_views: ViewSet,
                        settings: PipelineSettings):
    """Gaussians fitted to the target views."""
    cfg = settings.variant_config(variant_of(context))
    with stage(context, "optimize") as timing:
        result = optimize_stage.run(initial_gaussians, enhanced_views, cfg.optimize, seed=cfg.seed,
                                    device=str(cfg.resolved_device()))
    out = result.gaussians.detach().to("cpu")
    yield Output(out, metadata={
        "num_gaussians": len(out), "iterations": result.iterations,
        "iterations_per_second": round(result.iterations_per_second, 2),
        "final_loss": result.losses[-1] if result.losses else float("nan"),
        "loss_curve": MetadataValue.json([round(v, 5) for v in result.losses]), SECONDS_KEY: timing[SECONDS_KEY],
    })
    yield from gaussian_checks("optimized_gaussians", out)


@asset(**VARIANT_KW, op_tags=GPU_TAGS, pool=GPU_POOL, kinds={"pytorch"},
       check_specs=gaussian_specs("refined_gaussians"))
def refined_gaussians(context: AssetExecutionContext, optimized_gaussians: Gaussians, enhanced_views: ViewSet,
                      settings: PipelineSettings):
    """MVCRM refinement: depth consistency, normal smoothing, colour fusion (each switchable per variant), a short
    re-fit and the gate that keeps the optimised Gaussians when refining lowers the fit."""
    cfg = settings.variant_config(variant_of(context))
    device = str(cfg.resolved_device())
    with stage(context, "refine") as timing:
        estimates = pipeline.estimate_view_depths(enhanced_views, cfg.depth)
        result = refine_stage.run(optimized_gaussians.to(device), enhanced_views, estimates, cfg.refine,
                                  cfg.optimize, seed=cfg.seed)
    out = result.gaussians.detach().to("cpu")
    yield Output(out, metadata={**{k: int(v) for k, v in result.counts.items()}, **result.scores,
                                SECONDS_KEY: timing[SECONDS_KEY]})
    yield from gaussian_checks("refined_gaussians", out)


def _upstream_metadata(context: AssetExecutionContext, asset_name: str) -> dict:
    partition = image_of(context) if asset_name in IMAGE_LEVEL_ASSETS else str(context.partition_key)
    return latest_metadata(context, asset_name, partition)


def _timings(context: AssetExecutionContext) -> dict[str, float]:
    """{stage: seconds} of every stage of this (image, variant) materialised so far (latest materialisations)."""
    timings = {}
    for asset_name, stage_name in STAGE_NAMES.items():
        seconds = _upstream_metadata(context, asset_name).get(SECONDS_KEY)
        if seconds is not None:
            timings[stage_name] = float(seconds)
    return timings


def flatten_numbers(data: dict, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested dict as {"a.b": value} (booleans and text left out)."""
    out: dict[str, float] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_numbers(value, f"{name}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
    return out


@asset(**VARIANT_KW, op_tags=GPU_TAGS, pool=GPU_POOL, kinds={"ply", "glb", "mp4"})
def exports(context: AssetExecutionContext, refined_gaussians: Gaussians, enhanced_views: ViewSet,
            settings: PipelineSettings):
    """The deliverables: model.ply, mesh.glb/.obj, turntable.mp4, preview.png and metrics.json (the same
    entries as :func:`glimpse3d_core.pipeline.run_pipeline` writes, plus image key and variant)."""
    variant = variant_of(context)
    cfg = settings.variant_config(variant)
    fitted = _upstream_metadata(context, "optimized_gaussians")
    refined = _upstream_metadata(context, "refined_gaussians")
    extra = {
        "image": image_of(context), "variant": variant,
        "alpha_source": _upstream_metadata(context, "foreground").get("alpha_source"),
        "device": str(cfg.resolved_device()), "preset": cfg.preset,
        "optimize_iterations_per_second": fitted.get("iterations_per_second"),
        "optimize_final_loss": fitted.get("final_loss"),
        "gaussians_initial": _upstream_metadata(context, "initial_gaussians").get("num_gaussians"),
        "gaussians_optimized": fitted.get("num_gaussians"),
        "refine": {k: v for k, v in refined.items() if isinstance(v, int | float) and k != SECONDS_KEY},
        BACKENDS_KEY: _upstream_metadata(context, "multiview").get(BACKENDS_KEY),
        "timings": _timings(context),
    }
    with tempfile.TemporaryDirectory(prefix="glimpse3d-exports-") as tmp:
        with stage(context, "export") as timing:
            result = export_stage.run(refined_gaussians.to(str(cfg.resolved_device())), enhanced_views, tmp,
                                      cfg.export, extra_metrics=extra)
        numbers = flatten_numbers(result.metrics)
        preview = (Path(tmp) / "preview.png").read_bytes()
        # the IO manager stores the folder while this generator is suspended at the yield
        yield Output(OutputFolder(Path(tmp)), metadata={
            "preview_image": MetadataValue.md(markdown_thumbnail(preview, "preview.png")),
            **{k: numbers[k] for k in KEY_NUMBERS if k in numbers}, SECONDS_KEY: timing[SECONDS_KEY],
        })


@asset(**VARIANT_KW, op_tags=CPU_TAGS, kinds={"mlflow"}, check_specs=[psnr_spec("quality_metrics")])
def quality_metrics(context: AssetExecutionContext, exports: OutputFolder, settings: PipelineSettings,
                    mlflow: MlflowTracker):
    """The metrics of the exports, logged as one MLflow run per (image, variant): params = the full
    configuration and code version, metrics = quality numbers and stage timings (export's included)."""
    image, variant = image_of(context), variant_of(context)
    metrics = json.loads((exports.path / "metrics.json").read_text())
    metrics["timings"] = _timings(context)
    numbers = flatten_numbers(metrics)
    run_id = mlflow.log_run(
        run_name=f"{image}/{variant}",
        tags={"image": image, "variant": variant, "dagster_run_id": context.run.run_id,
              "dagster_partition": str(context.partition_key)},
        params=settings.variant_config(variant).flat_params(),
        metrics=numbers,
        artifacts=[exports.path / name for name in MLFLOW_ARTIFACTS if (exports.path / name).exists()],
    )
    yield Output(metrics, metadata={"mlflow_run_id": run_id, **{k: numbers[k] for k in KEY_NUMBERS if k in numbers}})
    yield psnr_check("quality_metrics", numbers.get("input_psnr", float("nan")))


VARIANT_ASSETS = [multiview, enhanced_views, optimized_gaussians, refined_gaussians, exports, quality_metrics]
