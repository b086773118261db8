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
    SELECTIONS_KEY,
    STAGE_NAMES,
    VARIANT_SELECTED,
    image_of,
    latest_metadata,
    recorded_chain,
    select_backends,
    stage,
    variant_of,
)
from glimpse3d_assets.checks import gaussian_checks, gaussian_specs, psnr_check, psnr_spec
from glimpse3d_assets.gpu import leased
from glimpse3d_assets.io_manager import markdown_thumbnail
from glimpse3d_assets.partitions import image_variant_partitions
from glimpse3d_assets.resources import MlflowTracker, PipelineSettings
from glimpse3d_assets.value_io import OutputFolder
from glimpse3d_core.chain import run_record
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
    image_record = latest_metadata(context, "source_image", image_of(context)).get(SELECTIONS_KEY) or {}
    chain = select_backends(context, settings.variant_config(variant_of(context)), VARIANT_SELECTED,
                            inherited={k: v for k, v in image_record.items() if k == "depth"})  # refine's depth check
    with leased(context, "multiview", chain) as step, stage(context, "multiview") as timing:
        out = step.multiview(initial_gaussians, foreground.image, foreground.camera)
    return Output(out, metadata={"views": len(out), "view_px": out.rig.width, BACKENDS_KEY: chain.backend_names,
                                 SELECTIONS_KEY: chain.selection_record(), SECONDS_KEY: timing[SECONDS_KEY]})


@asset(**VARIANT_KW, op_tags=GPU_TAGS, kinds={"pytorch"})
def enhanced_views(context: AssetExecutionContext, multiview: ViewSet, foreground: SegmentOutput,
                   settings: PipelineSettings) -> Output[ViewSet]:
    """The target views after enhancement (identity without model weights)."""
    chain = recorded_chain(context, settings.variant_config(variant_of(context)), "multiview")
    with leased(context, "enhance", chain) as step, stage(context, "enhance") as timing:
        out = step.enhance(multiview, foreground.image)
    return Output(out, metadata={"backend": chain.backend_names["enhance"], SECONDS_KEY: timing[SECONDS_KEY]})


@asset(**VARIANT_KW, op_tags=GPU_TAGS, pool=GPU_POOL, kinds={"pytorch"},
       check_specs=gaussian_specs("optimized_gaussians"))
def optimized_gaussians(context: AssetExecutionContext, initial_gaussians: Gaussians, enhanced_views: ViewSet,
                        settings: PipelineSettings):
    """Gaussians fitted to the target views."""
    chain = recorded_chain(context, settings.variant_config(variant_of(context)), "multiview")
    with leased(context, "optimize", chain) as step, stage(context, "optimize") as timing:
        result = step.optimize(initial_gaussians, enhanced_views)
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
    chain = recorded_chain(context, settings.variant_config(variant_of(context)), "multiview")
    with leased(context, "refine", chain) as step, stage(context, "refine") as timing:
        result = step.refine(optimized_gaussians, enhanced_views)
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
    chain = recorded_chain(context, settings.variant_config(variant), "multiview")
    fitted = _upstream_metadata(context, "optimized_gaussians")
    record = run_record(
        image=image_of(context), variant=variant,
        alpha_source=_upstream_metadata(context, "foreground").get("alpha_source"),
        backends={**_upstream_metadata(context, "source_image").get(BACKENDS_KEY, {}), **chain.backend_names},
        device=str(chain.context.device), preset=chain.config.preset,
        fitted={**fitted, "num_initial": _upstream_metadata(context, "initial_gaussians").get("num_gaussians"),
                "num_final": fitted.get("num_gaussians")},
        refine_counts={k: v for k, v in _upstream_metadata(context, "refined_gaussians").items()
                       if isinstance(v, int | float) and k != SECONDS_KEY},
        timings=_timings(context))
    with tempfile.TemporaryDirectory(prefix="glimpse3d-exports-") as tmp:
        with leased(context, "export", chain) as step, stage(context, "export") as timing:
            result = step.export(refined_gaussians, enhanced_views, tmp, record)
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
