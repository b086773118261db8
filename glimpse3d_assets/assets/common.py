"""What every stage asset shares: op tags for GPU/CPU routing, timing, clear failures, partition keys.

GPU stages carry ``pool="gpu"`` (a Dagster concurrency pool: at most as many such steps at once as the instance
allows, set to the GPUs present) and :data:`glimpse3d_assets.executors.GPU_TAGS`, which send them to GPU workers
(``dagster-celery/queue: gpu``; a ``dagster-k8s/config`` requesting one ``nvidia.com/gpu``). CPU stages carry
``CPU_TAGS`` (the ``cpu`` queue) and run beside them.
"""

from __future__ import annotations

import contextlib
import errno
import time
from collections.abc import Iterator

import torch
from dagster import AssetExecutionContext, AssetKey, AssetRecordsFilter, Failure, MultiPartitionKey

from glimpse3d_assets.executors import CELERY_QUEUE_TAG, CPU_QUEUE, CPU_TAGS, GPU_TAGS
from glimpse3d_assets.partitions import IMAGE_DIM, VARIANT_DIM
from glimpse3d_core.chain import IMAGE_STAGES, Chain
from glimpse3d_core.config import PipelineConfig
from glimpse3d_core.failpoints import failpoint
from glimpse3d_core.models.errors import ModelError
from glimpse3d_core.timing import timed

__all__ = ["CPU_TAGS", "GPU_POOL", "GPU_TAGS"]

GPU_POOL = "gpu"
STAGE_NAMES = {
    "source_image": "source_image", "foreground": "segment", "depth": "depth", "coarse_mesh": "reconstruct",
    "initial_gaussians": "gaussians", "multiview": "multiview", "enhanced_views": "enhance",
    "optimized_gaussians": "optimize", "refined_gaussians": "refine", "exports": "export",
}
"""Stage asset -> the stage it runs (``timings.<stage>`` in metrics.json and MLflow)."""
IMAGE_LEVEL_ASSETS = ("source_image", *(a for a, s in STAGE_NAMES.items() if s in IMAGE_STAGES))
"""Assets partitioned by image alone (the rest by image x variant)."""
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
"""OSError numbers of a full disk, a full quota and a file-size limit."""
SECONDS_KEY = "seconds"
"""Materialisation metadata entry with the stage's wall-clock time (collected into metrics and MLflow)."""
START_KEY = "start"
"""perf_counter() at the start of a :func:`stage` block (for metadata yielded inside it)."""
BACKENDS_KEY = "backends"
"""Materialisation metadata entry with {stage: backend name} of the run (recorded by the first asset of each job;
exports copies the variant's into metrics.json)."""
SELECTIONS_KEY = "backend_settings"
"""Materialisation metadata entry with {stage: the selected backend's settings} (:meth:`Chain.selection_record`),
recorded by the first asset of each job: the later steps rebuild the same backends from it."""
IMAGE_SELECTED = ("segment", "depth", "reconstruct")
VARIANT_SELECTED = ("multiview", "enhance")


def image_of(context: AssetExecutionContext) -> str:
    """The image key of the current partition (image-only or image x variant)."""
    key = context.partition_key
    return key.keys_by_dimension[IMAGE_DIM] if isinstance(key, MultiPartitionKey) else key


def variant_of(context: AssetExecutionContext) -> str:
    key = context.partition_key
    if not isinstance(key, MultiPartitionKey):
        raise TypeError(f"asset {context.asset_key.to_user_string()} is not partitioned by variant")
    return key.keys_by_dimension[VARIANT_DIM]


@contextlib.contextmanager
def stage(context: AssetExecutionContext, name: str) -> Iterator[dict[str, float]]:
    """Time a stage call (``timing[SECONDS_KEY]``); turn a user-level error (ValueError and subclasses: bad input;
    ModelError: missing or broken weights; a full disk) into a Dagster Failure whose description is the message a
    user needs, naming the image."""
    failpoint(f"stage.{name}")
    timing: dict[str, float] = {START_KEY: time.perf_counter()}
    try:
        with timed(timing, SECONDS_KEY):
            yield timing
    except (ValueError, ModelError) as exc:
        raise Failure(description=f"{name} failed for image {image_of(context)!r}: {exc}",
                      allow_retries=False) from exc
    except OSError as exc:
        if exc.errno not in DISK_FULL:
            raise
        where = f": {exc.filename}" if exc.filename else ""
        raise Failure(description=f"{name} failed for image {image_of(context)!r}: the disk is full "
                                  f"({exc.strerror}{where}); free space, then run again",
                      allow_retries=False) from exc
    context.log.info(f"{name}: {timing[SECONDS_KEY]:.2f} s")


def latest_metadata(context: AssetExecutionContext, asset: str, partition: str) -> dict:
    """Metadata of the latest materialisation of ``asset``'s ``partition`` (empty if none)."""
    records = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[partition]), limit=1
    ).records
    if not records:
        return {}
    materialization = records[0].asset_materialization
    return {k: v.value for k, v in (materialization.metadata if materialization else {}).items()}


def step_config(context: AssetExecutionContext, config: PipelineConfig) -> PipelineConfig:
    """``config`` for this step's process: the run's, except that a step of a CPU stage (one tagged for the
    ``cpu`` queue) in a process that sees no GPU runs on the CPU even where the run asks for CUDA. Such processes
    (a Celery ``cpu`` worker, a Kubernetes pod of a CPU stage) hide the GPUs by design, and the GPU stages run in
    others. A GPU stage in such a process still fails, naming the missing CUDA."""
    if (config.device.startswith("cuda") and not torch.cuda.is_available()
            and context.op_def.tags.get(CELERY_QUEUE_TAG) == CPU_QUEUE):
        context.log.info(f"a CPU stage in a process without a GPU: device cpu (the run asks for {config.device})")
        return config.model_copy(update={"device": "cpu"})
    return config


def select_backends(context: AssetExecutionContext, config: PipelineConfig, stages: tuple[str, ...],
                    inherited: dict[str, dict] | None = None) -> Chain:
    """The job's one backend selection, before its first stage does any work (a model backend whose weights are
    missing fails here, with the download command); ``inherited``: selections an earlier job recorded, kept as
    they are. The models load when a stage first needs them, once per process."""
    config = step_config(context, config)
    with stage(context, "backend check"):
        chain = Chain.prepare(config, stages=stages)
    chain = Chain.from_record(config, {**(inherited or {}), **chain.selection_record()}, chain.context)
    for name, choice in chain.selections.items():
        context.log.info(f"{name}: backend {choice.settings.name} ({choice.reason})")
    return chain


def recorded_chain(context: AssetExecutionContext, config: PipelineConfig, first_asset: str) -> Chain:
    """The chain whose backends ``first_asset`` (the job's first asset) selected for this partition."""
    partition = image_of(context) if first_asset == "source_image" else str(context.partition_key)
    record = latest_metadata(context, first_asset, partition).get(SELECTIONS_KEY)
    if record is None:
        raise Failure(description=f"{first_asset} of {partition!r} recorded no backend selection: materialise it "
                                  "again", allow_retries=False)
    return Chain.from_record(step_config(context, config), record)
