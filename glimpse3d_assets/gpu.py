"""Which stage steps use a GPU, and the GPU lease around them (:mod:`glimpse3d_core.gpu_lease`).

A leased step also holds its CPU thread pools to its slots' share of the host's cores
(:meth:`~glimpse3d_core.gpu_lease.GpuLeaseConfig.cpu_share`, :func:`~glimpse3d_core.threads.cpu_threads`) under an
executor that runs steps in processes of their own, which then share the cores; the in-process executor runs one
step at a time and leaves the pools as they are.

On a CUDA run the stages that render or fit (multiview, optimize, refine, export) always use the GPU; depth,
reconstruct and enhance only with a model backend (DPT, TripoSR, SDXL): their weight-free backends run on the
CPU and take no GPU slot. The Dagster ``gpu`` pool is therefore carried by the always-GPU stages only; for the
others the lease alone keeps a model step off a busy GPU.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import replace

import torch
from dagster import AssetExecutionContext

from glimpse3d_core.chain import Chain
from glimpse3d_core.gpu_lease import GpuLease, GpuLeaseConfig, gpu_lease
from glimpse3d_core.threads import available_cores, cpu_threads

ALWAYS_GPU_STAGES = frozenset({"multiview", "optimize", "refine", "export"})
MODEL_GPU_STAGES = frozenset({"depth", "reconstruct", "enhance"})
"""On the GPU only when the stage's backend is a model (weight-free backends are CPU code)."""


def uses_gpu(stage: str, chain: Chain) -> bool:
    """Whether ``stage`` runs on the GPU in ``chain`` (its run context's device and its selected backend)."""
    if chain.context.device.type != "cuda":
        return False
    if stage in ALWAYS_GPU_STAGES:
        return True
    return stage in MODEL_GPU_STAGES and not chain.selections[stage].backend.weight_free


def step_gib(stage: str, chain: Chain) -> float:
    """GPU memory (GiB) a step of ``stage`` declares beyond one lease slot: its selected backend's ``gpu_gib`` (0 for
    a stage without backends)."""
    selection = chain.selections.get(stage)
    return selection.backend.gpu_gib if selection else 0.0


ONE_STEP_AT_A_TIME = frozenset({"in_process", "execute_in_process_executor"})
"""Names of the executors that run a run's steps one after the other in its own process: Dagster's
``in_process_executor`` and the one ``execute_in_process`` (``glimpse3d run``) substitutes."""


def step_cpu_threads(executor: str, lease: GpuLease, config: GpuLeaseConfig, cores: int) -> int | None:
    """CPU threads of a step holding ``lease``, run by the Dagster executor named ``executor``: its slots' share of
    ``cores``, or None (pools left as they are) under an executor of ``ONE_STEP_AT_A_TIME``."""
    return None if executor in ONE_STEP_AT_A_TIME else config.cpu_share(len(lease.slots), cores)


@contextmanager
def leased(context: AssetExecutionContext, stage: str, chain: Chain) -> Iterator[Chain]:
    """``chain`` on a leased ``cuda:<i>`` for a GPU stage, its slots (as many as its backend's ``gpu_gib`` needs)
    held until the block ends; else ``chain`` as it is. A leased step's materialisation metadata records ``gpu``
    (index), ``gpu_host_id``, ``gpu_slots``, ``gpu_wait_s``, ``cpu_threads`` (the step's CPU pool size:
    :func:`step_cpu_threads` of the GPUs this process sees, else torch's) and the lease's ``gpu_start``/``gpu_end``
    (Unix seconds); the asset yields its output after the block."""
    if not uses_gpu(stage, chain):
        yield chain
        return
    output = context.assets_def.get_output_name_for_asset_key(context.asset_key)
    config = GpuLeaseConfig.from_env()
    with gpu_lease(config, gib=step_gib(stage, chain)) as lease:
        start = time.time()
        threads = step_cpu_threads(context.job_def.executor_def.name, lease, config, available_cores())
        pool = threads or torch.get_num_threads()
        context.log.info(f"{stage}: GPU {lease.index} (id {lease.host_id}, slots {lease.slots}), "
                         f"waited {lease.waited_s:.2f} s, CPU threads {pool}")
        context.add_output_metadata({**lease.metadata(), "gpu_start": start, "cpu_threads": pool},
                                    output_name=output)
        with cpu_threads(threads) if threads else nullcontext():
            yield Chain(chain.config, replace(chain.context, device=torch.device(lease.device)), chain.selections)
        context.add_output_metadata({"gpu_end": time.time()}, output_name=output)  # before the lock is let go
