"""``glimpse3d worker``: the celery command line and environment it starts (no broker needed)."""

from __future__ import annotations

import runpy
import sys

import pytest
import torch

from glimpse3d_assets.executors import BROKER_ENV, CPU_QUEUE, EXECUTOR_ENV
from glimpse3d_cli.worker import CONFIG_MODULE, QueueName, WorkerSpec, worker_command
from glimpse3d_core.models.store import MODELS_DIR_ENV


def test_gpu_worker_sees_its_gpu_and_the_broker(tmp_path):
    spec = WorkerSpec(queue=QueueName.gpu, gpu=3, broker_url="redis://10.0.0.5:6379/2", models_dir=tmp_path / "m")
    argv, env = worker_command(spec, tmp_path / "cfg", env={"PATH": "/bin", EXECUTOR_ENV: "multiprocess"})
    assert argv[:6] == [sys.executable, "-m", "celery", "-A", "dagster_celery.app", "worker"]
    assert argv[argv.index("--queues") + 1] == "gpu" and argv[argv.index("--hostname") + 1].startswith("gpu3@")
    assert argv[argv.index("--concurrency") + 1] == "1"
    assert env["CUDA_VISIBLE_DEVICES"] == "3" and env[EXECUTOR_ENV] == "celery"
    assert env[BROKER_ENV] == "redis://10.0.0.5:6379/2" and env[MODELS_DIR_ENV] == str((tmp_path / "m").resolve())
    assert env["PYTHONPATH"].split(":")[0] == str(tmp_path / "cfg")
    config = runpy.run_path(str(tmp_path / "cfg" / f"{CONFIG_MODULE}.py"))
    assert config["broker_url"] == config["result_backend"] == "redis://10.0.0.5:6379/2"
    assert config["task_default_queue"] == CPU_QUEUE and config["task_track_started"] is True


def test_cpu_worker_sees_no_gpu(tmp_path):
    _, env = worker_command(WorkerSpec(queue=QueueName.cpu, concurrency=2), tmp_path, env={"CUDA_VISIBLE_DEVICES": "0"})
    assert env["CUDA_VISIBLE_DEVICES"] == ""


@pytest.mark.parametrize("kwargs,match", [({"queue": QueueName.cpu, "gpu": 0}, "--gpu"),
                                          ({"queue": QueueName.gpu, "gpu": -1}, "GPU index"),
                                          ({"queue": QueueName.gpu, "concurrency": 0}, "concurrency")])
def test_bad_worker_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WorkerSpec(**kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="about a process that sees no GPU")
def test_cpu_stage_steps_run_on_the_cpu_where_no_gpu_is_visible():
    """A run that asks for CUDA, in a process without a GPU (a ``cpu`` worker): its CPU-queue steps get device
    cpu, so the image stages run; a GPU-queue step keeps cuda and so fails, naming the missing CUDA."""
    from dagster import asset, materialize

    from glimpse3d_assets.assets.common import step_config
    from glimpse3d_assets.executors import CPU_TAGS, GPU_TAGS
    from glimpse3d_core.config import PipelineConfig

    run = PipelineConfig(device="cuda")
    seen = {}

    @asset(op_tags=CPU_TAGS)
    def cpu_stage(context) -> None:
        seen["cpu"] = step_config(context, run).device

    @asset(op_tags=GPU_TAGS)
    def gpu_stage(context) -> None:
        seen["gpu"] = step_config(context, run).device

    assert materialize([cpu_stage, gpu_stage]).success
    assert seen == {"cpu": "cpu", "gpu": "cuda"}
    assert step_config_error(run) and "CUDA is not available" in step_config_error(run)


def step_config_error(config) -> str:
    """The error of resolving ``config``'s run context here."""
    from glimpse3d_core.errors import ConfigError

    try:
        config.context()
    except ConfigError as exc:
        return str(exc)
    return ""
