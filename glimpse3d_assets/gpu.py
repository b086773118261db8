"""Which stage steps use a GPU, and the GPU lease around them (:mod:`glimpse3d_core.gpu_lease`).

On a CUDA run the stages that render or fit (multiview, optimize, refine, export) always use the GPU; depth,
reconstruct and enhance only with a model backend (DPT, TripoSR, SDXL): their weight-free backends run on the
CPU and take no GPU slot. The Dagster ``gpu`` pool is therefore carried by the always-GPU stages only; for the
others the lease alone keeps a model step off a busy GPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from dagster import AssetExecutionContext

from glimpse3d_core.backends.selection import select_backend
from glimpse3d_core.config import PipelineConfig
from glimpse3d_core.gpu_lease import gpu_lease

ALWAYS_GPU_STAGES = frozenset({"multiview", "optimize", "refine", "export"})
MODEL_GPU_STAGES = frozenset({"depth", "reconstruct", "enhance"})
"""On the GPU only when the stage's backend is a model (weight-free backends are CPU code)."""


def uses_gpu(stage: str, config: PipelineConfig) -> bool:
    """Whether ``stage`` runs on the GPU under ``config``."""
    if config.resolved_device().type != "cuda":
        return False
    if stage in ALWAYS_GPU_STAGES:
        return True
    return stage in MODEL_GPU_STAGES and select_backend(stage, getattr(config, stage)).uses_model


@contextmanager
def stage_device(context: AssetExecutionContext, stage: str, config: PipelineConfig) -> Iterator[str]:
    """The torch device ``stage`` runs on: a leased ``cuda:<i>`` for a GPU stage (held until the block ends; its
    index etc. recorded in the step's materialisation metadata), else the configuration's device."""
    if not uses_gpu(stage, config):
        yield str(config.resolved_device())
        return
    with gpu_lease() as lease:
        context.log.info(f"{stage}: GPU {lease.index} (id {lease.host_id}, slot {lease.slot}), "
                         f"waited {lease.waited_s:.2f} s")
        context.add_output_metadata(lease.metadata(),
                                    output_name=context.assets_def.get_output_name_for_asset_key(context.asset_key))
        yield lease.device
