"""``glimpse3d worker --queue gpu|cpu [--gpu N]``: a Celery worker that runs Glimpse3D steps (dagster-celery).

Start one ``gpu`` worker per GPU (``--gpu 0``, ``--gpu 1``, ...: each sees only its own GPU through
CUDA_VISIBLE_DEVICES, so inside it the GPU is ``cuda:0``) and any number of ``cpu`` workers (they see no GPU).
The worker runs ``celery -A dagster_celery.app worker`` in this process's place with:

* the broker and result backend of ``GLIMPSE3D_BROKER_URL`` / ``GLIMPSE3D_CELERY_BACKEND`` (or ``--broker``),
  written into the ``dagster_celery_config`` module that dagster-celery's app reads;
* worker name ``<queue><gpu>@<host>`` (e.g. ``gpu0@node1``), recorded by dagster-celery in each step's
  "Executing steps ... in celery worker" event, so the run shows where every step ran;
* the model cache ``GLIMPSE3D_MODELS_DIR`` (``--models-dir``; weights load once per worker process);
* ``GLIMPSE3D_EXECUTOR=celery``; every other ``GLIMPSE3D_*`` setting (storage, S3 endpoint, MLflow) and
  ``DAGSTER_HOME`` pass through unchanged: they must match the machine that launches runs.

Each worker process takes one task at a time (prefetch 1); ``--concurrency`` sets the processes (prefork
pool), 1 for a GPU worker. A step whose process dies (e.g. killed for memory) fails with Celery's
WorkerLostError in the run, and ``dagster job`` re-execution from failure redoes only the failed steps.
"""

from __future__ import annotations

import enum
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import typer

from glimpse3d_assets.executors import (
    BROKER_ENV,
    CPU_QUEUE,
    DEFAULT_BROKER,
    EXECUTOR_ENV,
    GPU_QUEUE,
    Deployment,
    ExecutorKind,
    celery_config,
)
from glimpse3d_core.models.store import MODELS_DIR_ENV

CELERY_APP = "dagster_celery.app"
CONFIG_MODULE = "dagster_celery_config"
"""dagster-celery's app imports this module, if found on the path, for the broker, backend and settings."""


class QueueName(enum.StrEnum):
    gpu = GPU_QUEUE
    cpu = CPU_QUEUE


@dataclass(frozen=True)
class WorkerSpec:
    """What one worker serves: its queue, its GPU (gpu queue only), processes, broker, model cache."""

    queue: QueueName
    gpu: int | None = None
    concurrency: int = 1
    name: str | None = None
    broker_url: str | None = None
    models_dir: Path | None = None
    loglevel: str = "INFO"

    def __post_init__(self) -> None:
        if self.queue is QueueName.cpu and self.gpu is not None:
            raise ValueError("--gpu is for --queue gpu workers; cpu workers see no GPU")
        if self.gpu is not None and self.gpu < 0:
            raise ValueError(f"--gpu takes a GPU index >= 0, not {self.gpu}")
        if self.concurrency < 1:
            raise ValueError(f"--concurrency must be at least 1, not {self.concurrency}")

    @property
    def node_name(self) -> str:
        """Celery node name: ``--name`` or ``<queue><gpu>``, then ``@<host>``."""
        base = self.name or f"{self.queue.value}{'' if self.gpu is None else self.gpu}"
        return f"{base}@{socket.gethostname()}"


def write_config_module(deployment: Deployment, folder: Path) -> Path:
    """Write ``dagster_celery_config.py`` (broker, backend, Celery settings of ``celery_config``) into
    ``folder``; returns the folder, to be put on PYTHONPATH."""
    config = celery_config(deployment)
    lines = [f"broker_url = {config['broker']!r}", f"result_backend = {config['backend']!r}"]
    lines += [f"{key} = {value!r}" for key, value in config["config_source"].items()]
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{CONFIG_MODULE}.py"
    temp = target.with_suffix(".tmp")
    temp.write_text("\n".join(lines) + "\n")
    temp.replace(target)
    return folder


def worker_command(spec: WorkerSpec, config_dir: Path, env: Mapping[str, str] | None = None
                   ) -> tuple[list[str], dict[str, str]]:
    """The celery command line and environment of the worker ``spec`` (the config module goes to
    ``config_dir``)."""
    env = dict(os.environ if env is None else env)
    if spec.broker_url:
        env[BROKER_ENV] = spec.broker_url
    env[EXECUTOR_ENV] = ExecutorKind.CELERY.value
    deployment = Deployment.from_env(env)
    write_config_module(deployment, config_dir)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(config_dir), env.get("PYTHONPATH", "")) if p)
    if spec.queue is QueueName.gpu:
        if spec.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(spec.gpu)
    else:
        env["CUDA_VISIBLE_DEVICES"] = ""
    if spec.models_dir is not None:
        env[MODELS_DIR_ENV] = str(spec.models_dir.expanduser().resolve())
    pool = ["--pool", "prefork", "--concurrency", str(spec.concurrency)]
    argv = [sys.executable, "-m", "celery", "-A", CELERY_APP, "worker", "--queues", spec.queue.value,
            "--hostname", spec.node_name, "--loglevel", spec.loglevel, "--prefetch-multiplier", "1",
            "--without-gossip", "--without-mingle", *pool]
    return argv, env


def start_worker(spec: WorkerSpec, config_dir: Path, log: Path, env: Mapping[str, str] | None = None
                 ) -> subprocess.Popen:
    """Start the worker ``spec`` in the background, in its own process group (stop it with
    ``os.killpg(proc.pid, signal)``: the Celery main process and its pool processes together); output to
    ``log``. For tests, benchmarks and scripts; ``glimpse3d worker`` is the foreground equivalent."""
    argv, worker_env = worker_command(spec, config_dir, env)
    with open(log, "ab") as out:
        return subprocess.Popen(argv, env=worker_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait_for_workers(deployment: Deployment, node_names: list[str], timeout_s: float = 120.0) -> None:
    """Block until every named worker answers a ping through ``deployment``'s broker (TimeoutError after
    ``timeout_s``)."""
    from celery import Celery

    app = Celery(broker=deployment.broker_url, backend=deployment.result_backend)
    deadline = time.monotonic() + timeout_s
    answered: set[str] = set()
    while not answered >= set(node_names):
        if time.monotonic() > deadline:
            raise TimeoutError(f"celery workers {sorted(set(node_names) - answered)} did not answer within "
                               f"{timeout_s:.0f} s (broker {deployment.broker_url})")
        replies = app.control.ping(destination=list(node_names), timeout=1.0)
        answered |= {name for reply in replies for name in reply}


def worker(
    queue: QueueName = typer.Option(..., "--queue", help="gpu: GPU stages (one worker per GPU); cpu: the rest"),
    gpu: int | None = typer.Option(None, "--gpu", help="GPU index this worker owns (sets CUDA_VISIBLE_DEVICES)"),
    concurrency: int = typer.Option(1, "--concurrency", min=1, help="worker processes (steps at once)"),
    name: str | None = typer.Option(None, "--name", help="Celery node name before @host (default queue+gpu)"),
    broker: str | None = typer.Option(None, "--broker",
                                      help=f"broker URL (default ${BROKER_ENV}, else {DEFAULT_BROKER})"),
    models_dir: Path | None = typer.Option(None, "--models-dir", help=f"model cache (sets ${MODELS_DIR_ENV})"),
    loglevel: str = typer.Option("INFO", "--loglevel"),
) -> None:
    """Start a Celery worker for Glimpse3D steps on one queue (replaces this process with celery)."""
    try:
        spec = WorkerSpec(queue=queue, gpu=gpu, concurrency=concurrency, name=name, broker_url=broker,
                          models_dir=models_dir, loglevel=loglevel)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    config_dir = Path(tempfile.mkdtemp(prefix=f"glimpse3d-worker-{spec.queue.value}-"))
    argv, env = worker_command(spec, config_dir)
    typer.echo(f"starting {spec.node_name} on queue {spec.queue.value} (broker {Deployment.from_env(env).broker_url})")
    sys.stdout.flush()
    os.execvpe(argv[0], argv, env)
