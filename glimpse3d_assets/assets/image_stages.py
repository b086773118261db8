"""Image-level stages (partitioned by image): source_image -> foreground -> depth -> coarse_mesh ->
initial_gaussians. Thin wrappers: each loads its inputs (IO manager), calls one ``glimpse3d_core.stages`` run()
with the run's configuration, and reports time and key numbers."""


import hashlib
import json
import tempfile
import time
from pathlib import Path, PurePosixPath

import numpy as np
from dagster import AssetExecutionContext, Config, MetadataValue, Output, asset
from pydantic import Field

from glimpse3d_assets.assets.common import (
    BACKENDS_KEY,
    CPU_TAGS,
    GPU_TAGS,
    IMAGE_SELECTED,
    SECONDS_KEY,
    SELECTIONS_KEY,
    START_KEY,
    image_of,
    latest_metadata,
    recorded_chain,
    select_backends,
    stage,
)
from glimpse3d_assets.checks import gaussian_checks, gaussian_specs
from glimpse3d_assets.gpu import leased
from glimpse3d_assets.io_manager import markdown_thumbnail
from glimpse3d_assets.partitions import images_partitions
from glimpse3d_assets.resources import Inbox, PipelineSettings
from glimpse3d_assets.value_io import OutputFolder
from glimpse3d_core.io.images import ImageFormatError, load_image
from glimpse3d_core.stages.segment import SegmentOutput
from glimpse3d_core.types import DepthMap, Gaussians, MeshAsset

GROUP = "image_stages"
SOURCE_FILE_STEM = "photo"
SOURCE_INFO = "source.json"


class SourceImageConfig(Config):
    """Which file this image partition reads. Empty: the URI of the partition's previous materialisation."""

    uri: str = Field("", description="local path or fsspec URL of the photo")
    fingerprint: str = Field("", description="content fingerprint the sensor saw (informational)")


def photo_path(source: OutputFolder):
    """The photo file inside a stored ``source_image``."""
    return next(p for p in source.files() if p.stem == SOURCE_FILE_STEM)


@asset(partitions_def=images_partitions, group_name=GROUP, op_tags=CPU_TAGS, kinds={"image"})
def source_image(context: AssetExecutionContext, config: SourceImageConfig, inbox: Inbox,
                 settings: PipelineSettings):
    """The input photo, copied byte for byte into storage after checking that it decodes. First of all, the run's
    backends are resolved: a model backend without weights fails before any work."""
    chain = select_backends(context, settings.image_config(), IMAGE_SELECTED)
    key = image_of(context)
    uri = config.uri or latest_metadata(context, "source_image", key).get("uri", "")
    if not uri:
        raise ValueError(f"image {key!r}: no source URI given and none recorded earlier (pass config uri)")
    with tempfile.TemporaryDirectory(prefix="glimpse3d-source-") as tmp, stage(context, "source_image") as timing:
        data = inbox.read_uri(uri)
        photo = Path(tmp) / f"{SOURCE_FILE_STEM}{PurePosixPath(uri).suffix.lower()}"
        photo.write_bytes(data)
        try:
            rgb, alpha = load_image(photo)
        except ImageFormatError as exc:  # corrupt, truncated, empty, too large: name the user's file
            raise ImageFormatError(str(exc).replace(str(photo), uri)) from exc
        digest = hashlib.sha256(data).hexdigest()
        (Path(tmp) / SOURCE_INFO).write_text(json.dumps({"uri": uri, "sha256": digest}, indent=1))
        preview = markdown_thumbnail(data, uri)
        # the IO manager stores the folder while this generator is suspended at the yield
        yield Output(OutputFolder(Path(tmp)), metadata={
            "uri": uri, "sha256": digest, "width": rgb.shape[1], "height": rgb.shape[0],
            "has_alpha": alpha is not None, "photo": MetadataValue.md(preview), BACKENDS_KEY: chain.backend_names,
            SELECTIONS_KEY: chain.selection_record(),
            SECONDS_KEY: time.perf_counter() - timing[START_KEY],
        })


@asset(partitions_def=images_partitions, group_name=GROUP, op_tags=CPU_TAGS, kinds={"image"})
def foreground(context: AssetExecutionContext, source_image: OutputFolder,
               settings: PipelineSettings) -> Output[SegmentOutput]:
    """The object matted and framed on a square canvas, with the input camera for that canvas."""
    chain = recorded_chain(context, settings.image_config(), "source_image")
    with stage(context, "segment") as timing:
        rgb, alpha = load_image(photo_path(source_image))
        out = chain.segment(rgb, alpha, image_of(context))
    return Output(out, metadata={
        "alpha_source": out.alpha_source, "canvas_px": out.image.size[0],
        "foreground_fraction": float((out.image.alpha > 0.5).mean()), SECONDS_KEY: timing[SECONDS_KEY],
    })


@asset(partitions_def=images_partitions, group_name=GROUP, op_tags=GPU_TAGS, kinds={"pytorch"})
def depth(context: AssetExecutionContext, foreground: SegmentOutput, settings: PipelineSettings) -> Output[DepthMap]:
    """Relative depth of the foreground (weight-free inflation, or a depth model when its weights are present)."""
    chain = recorded_chain(context, settings.image_config(), "source_image")
    with leased(context, "depth", chain) as chain, stage(context, "depth") as timing:
        out = chain.depth(foreground.image)
    valid = out.depth[out.valid]
    return Output(out, metadata={"valid_fraction": float(out.valid.mean()), "metric": out.metric,
                                 "depth_range": float(np.ptp(valid)) if valid.size else 0.0,
                                 SECONDS_KEY: timing[SECONDS_KEY]})


@asset(partitions_def=images_partitions, group_name=GROUP, op_tags=GPU_TAGS, kinds={"pytorch"})
def coarse_mesh(context: AssetExecutionContext, foreground: SegmentOutput, depth: DepthMap,
                settings: PipelineSettings) -> Output[MeshAsset]:
    """Closed coloured mesh of the object in the world frame."""
    chain = recorded_chain(context, settings.image_config(), "source_image")
    with leased(context, "reconstruct", chain) as chain, stage(context, "reconstruct") as timing:
        out = chain.reconstruct(foreground.image, depth, foreground.camera)
    extent = out.vertices.max(0) - out.vertices.min(0)
    return Output(out, metadata={"vertices": len(out.vertices), "faces": len(out.faces),
                                 "extent": [round(float(e), 4) for e in extent], SECONDS_KEY: timing[SECONDS_KEY]})


@asset(partitions_def=images_partitions, group_name=GROUP, op_tags=CPU_TAGS, kinds={"pytorch"},
       check_specs=gaussian_specs("initial_gaussians"))
def initial_gaussians(context: AssetExecutionContext, coarse_mesh: MeshAsset, settings: PipelineSettings):
    """Flat surface-aligned Gaussians sampled on the coarse mesh."""
    with stage(context, "gaussians_from_mesh") as timing:
        chain = recorded_chain(context, settings.image_config(), "source_image")
        out: Gaussians = chain.gaussians(coarse_mesh).to("cpu")
    yield Output(out, metadata={"num_gaussians": len(out), SECONDS_KEY: timing[SECONDS_KEY]})
    yield from gaussian_checks("initial_gaussians", out)


IMAGE_ASSETS = [source_image, foreground, depth, coarse_mesh, initial_gaussians]
