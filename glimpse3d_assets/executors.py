"""Executor per deployment, and the op tags that route GPU and CPU stages under Celery and Kubernetes.

One code base serves every deployment; the executor is picked from one setting, ``GLIMPSE3D_EXECUTOR``:

* ``in_process``: every step in the run's own process (``glimpse3d run``, tests);
* ``multiprocess``: one process per step on this machine (default; GPU steps limited by the ``gpu`` pool);
* ``celery``: steps sent to Celery workers through a broker (``GLIMPSE3D_BROKER_URL``, Redis by default; results
  in ``GLIMPSE3D_CELERY_BACKEND``, default the broker). GPU stages go to the ``gpu`` queue (one worker per GPU,
  ``glimpse3d worker --queue gpu --gpu N``), the rest to ``cpu``; a step without a queue tag goes to ``cpu``.
  A step whose worker stops answering pings for ``GLIMPSE3D_WORKER_LOST_AFTER_S`` seconds (default 20) fails,
  naming the worker, instead of leaving the run waiting forever. Workers import the same definitions, so they
  need the same ``GLIMPSE3D_*`` storage settings (shared storage: S3) and the same Dagster instance
  (``DAGSTER_HOME``; Postgres storage across machines);
* ``k8s``: one Kubernetes Job per step (dagster-k8s); GPU stages request ``nvidia.com/gpu`` through their
  ``dagster-k8s/config`` tag. Image and namespace: ``GLIMPSE3D_K8S_IMAGE``, ``GLIMPSE3D_K8S_NAMESPACE``.

Executor selection is a pure function of the settings (no connection is opened until a run starts);
``execute_partition`` runs one partition of a job on it from this process.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from dagster import (
    AssetKey,
    DagsterInstance,
    ExecutorDefinition,
    JobExecutionResult,
    ReexecutionOptions,
    build_reconstructable_job,
    execute_job,
    in_process_executor,
    multiprocess_executor,
)

from glimpse3d_assets.celery_watch import DEFAULT_WORKER_LOST_AFTER_S, watched_celery_executor

EXECUTOR_ENV = "GLIMPSE3D_EXECUTOR"
BROKER_ENV = "GLIMPSE3D_BROKER_URL"
BACKEND_ENV = "GLIMPSE3D_CELERY_BACKEND"
K8S_IMAGE_ENV = "GLIMPSE3D_K8S_IMAGE"
K8S_NAMESPACE_ENV = "GLIMPSE3D_K8S_NAMESPACE"
WORKER_LOST_ENV = "GLIMPSE3D_WORKER_LOST_AFTER_S"
DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
DEFAULT_K8S_NAMESPACE = "glimpse3d"
DEFINITIONS_MODULE = "glimpse3d_assets.definitions"
JOB_TARGET = "job_from_env"

GPU_QUEUE = "gpu"
CPU_QUEUE = "cpu"
CELERY_QUEUE_TAG = "dagster-celery/queue"
K8S_CONFIG_TAG = "dagster-k8s/config"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
"""GPU node pools are usually tainted ``nvidia.com/gpu:NoSchedule``; GPU pods tolerate it, CPU pods stay off."""


class ExecutorKind(StrEnum):
    IN_PROCESS = "in_process"
    MULTIPROCESS = "multiprocess"
    CELERY = "celery"
    K8S = "k8s"


@dataclass(frozen=True)
class Deployment:
    """Where steps run. ``broker_url``/``backend_url`` matter for Celery, ``k8s_*`` for Kubernetes."""

    executor: ExecutorKind = ExecutorKind.MULTIPROCESS
    broker_url: str = DEFAULT_BROKER
    backend_url: str | None = None
    k8s_image: str | None = None
    k8s_namespace: str = DEFAULT_K8S_NAMESPACE
    worker_lost_after_s: float = DEFAULT_WORKER_LOST_AFTER_S

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Deployment:
        """The deployment described by ``env`` (default ``os.environ``); an unknown executor is a ValueError."""
        env = os.environ if env is None else env
        name = env.get(EXECUTOR_ENV, ExecutorKind.MULTIPROCESS.value)
        try:
            kind = ExecutorKind(name)
        except ValueError:
            choices = ", ".join(k.value for k in ExecutorKind)
            raise ValueError(f"unknown {EXECUTOR_ENV}={name!r}; choose one of {choices}") from None
        return cls(
            executor=kind, broker_url=env.get(BROKER_ENV) or DEFAULT_BROKER, backend_url=env.get(BACKEND_ENV) or None,
            k8s_image=env.get(K8S_IMAGE_ENV) or None, k8s_namespace=env.get(K8S_NAMESPACE_ENV) or DEFAULT_K8S_NAMESPACE,
            worker_lost_after_s=float(env.get(WORKER_LOST_ENV) or DEFAULT_WORKER_LOST_AFTER_S),
        )

    @property
    def result_backend(self) -> str:
        return self.backend_url or self.broker_url


def celery_config(deployment: Deployment) -> dict[str, Any]:
    """The Celery executor config: broker, result backend, untagged steps to the ``cpu`` queue, one task
    prefetched per worker process (a GPU worker never holds a second GPU step it cannot start), and started
    tasks reported with their worker's name (what the lost-worker watch pings)."""
    return {
        "broker": deployment.broker_url,
        "backend": deployment.result_backend,
        "config_source": {"task_default_queue": CPU_QUEUE, "worker_prefetch_multiplier": 1,
                          "task_track_started": True},
    }


def k8s_config(deployment: Deployment) -> dict[str, Any]:
    """The ``k8s_job_executor`` config: image and namespace of the step pods (run config may add more)."""
    config: dict[str, Any] = {"job_namespace": deployment.k8s_namespace}
    if deployment.k8s_image:
        config["job_image"] = deployment.k8s_image
    return config


def executor_for(deployment: Deployment) -> ExecutorDefinition:
    """The Dagster executor of ``deployment`` (Celery and Kubernetes executors pre-configured)."""
    if deployment.executor is ExecutorKind.IN_PROCESS:
        return in_process_executor
    if deployment.executor is ExecutorKind.MULTIPROCESS:
        return multiprocess_executor
    if deployment.executor is ExecutorKind.CELERY:
        config = {**celery_config(deployment), "worker_lost_after_s": deployment.worker_lost_after_s}
        return watched_celery_executor.configured(config, name="celery")
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor.configured(k8s_config(deployment), name="k8s")


def executor_from_env(env: Mapping[str, str] | None = None) -> ExecutorDefinition:
    """``executor_for(Deployment.from_env(env))``."""
    return executor_for(Deployment.from_env(env))


def gpu_op_tags(gpus: int = 1) -> dict[str, Any]:
    """Tags of a GPU stage: the ``gpu`` Celery queue; a Kubernetes pod that requests and is limited to ``gpus``
    GPUs and tolerates the GPU nodes' taint."""
    if gpus < 1:
        raise ValueError(f"a GPU stage needs at least one GPU, not {gpus}")
    gpu = {GPU_RESOURCE: str(gpus)}
    return {
        CELERY_QUEUE_TAG: GPU_QUEUE,
        K8S_CONFIG_TAG: {
            "container_config": {"resources": {"limits": dict(gpu), "requests": dict(gpu)}},
            "pod_spec_config": {"tolerations": [dict(GPU_TOLERATION)]},
        },
    }


def cpu_op_tags() -> dict[str, Any]:
    """Tags of a CPU stage: the ``cpu`` Celery queue; no GPU request under Kubernetes."""
    return {CELERY_QUEUE_TAG: CPU_QUEUE}


GPU_TAGS = gpu_op_tags()
CPU_TAGS = cpu_op_tags()


def reconstructable_job(name: str):
    """Job ``name`` as a pointer (module, function, argument: ``definitions.job_from_env(name)``) that Celery
    workers and Kubernetes step pods load again; every process rebuilds the definitions from its own
    environment."""
    return build_reconstructable_job(DEFINITIONS_MODULE, JOB_TARGET, reconstructable_args=(name,))


def execute_partition(job_name: str, partition_key: str, instance: DagsterInstance, *,
                      run_config: Mapping[str, Any] | None = None,
                      reexecution: ReexecutionOptions | None = None, tags: Mapping[str, str] | None = None,
                      assets: list[str] | None = None) -> JobExecutionResult:
    """Run ``job_name`` (only ``assets`` of it, if given) for one partition (a multi-partition key as its string)
    on the executor of the environment's deployment, from this process, with the owner tags of this process
    (:mod:`glimpse3d_assets.runs`) and ``tags``; failures are in the result (no exception)."""
    from glimpse3d_assets.runs import owner_tags

    job = reconstructable_job(job_name)
    tags = {**job.get_definition().get_tags_for_partition_key(str(partition_key), None), **owner_tags(),
            **(tags or {})}
    selection = [AssetKey(a) for a in assets] if assets is not None else None
    return execute_job(job, instance, run_config=run_config, tags=tags, raise_on_error=False,
                       reexecution_options=reexecution, asset_selection=selection)
