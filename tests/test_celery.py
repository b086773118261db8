"""The asset graph on Dagster's Celery executor: a real Redis broker, two real Celery workers (queues ``gpu`` and
``cpu``, subprocesses on loopback), the S3 IO manager on a loopback moto server, and one Dagster instance shared by
this process and the workers, with Postgres storage in a database of its own (SQLite's per-run event files are
created through alembic, whose logging reconfiguration deadlocks concurrent runs in one process).

Sizes are the smallest the stages accept (64 px canvas, 500 Gaussians, a few optimisation steps): this tests
routing, storage and failure handling, not quality.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import pytest

from glimpse3d_assets import package_data
from glimpse3d_assets.executors import (
    CELERY_QUEUE_TAG,
    CPU_QUEUE,
    GPU_QUEUE,
    WORKER_LOST_ENV,
    Deployment,
    execute_partition,
    reconstructable_job,
)
from glimpse3d_cli.worker import QueueName, WorkerSpec, start_worker, wait_for_workers
from tests.conftest import require_service
from tests.test_s3_storage import BUCKET, moto_s3  # noqa: F401  (the loopback S3 server fixture)

pytestmark = pytest.mark.timeout(900)

REDIS_DB = 11
"""Redis database of these tests (flushed at the start; nothing else here uses it)."""
PG_DATABASE = "glimpse3d_celery_test"
"""Postgres database of these tests (created fresh, dropped at the end)."""
IMAGES = ("dreamgaussian/ghost_rgba.png", "dreamgaussian/catstatue_rgba.png", "threestudio/cactus_rgba.png")
VARIANT = "default"
SLOW_OPTIMIZE = {"iterations": 400}
"""Optimisation long enough (tens of seconds here) for the kill to land while the step runs."""
LOST_AFTER_S = 6
WORKER_EVENT = "Celery worker"
"""Metadata key of dagster-celery's "Executing steps ... in celery worker" event: the worker's node name."""


def _redis_url() -> str:
    url = urlparse(require_service("GLIMPSE3D_REDIS_URL", "redis://127.0.0.1:6379/0"))
    return urlunparse(url._replace(path=f"/{REDIS_DB}"))


def _postgres_database() -> str:
    """Create a fresh database for the Dagster instance; returns its URL."""

    admin = require_service("GLIMPSE3D_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    return recreate_database(admin, PG_DATABASE, create=True)


def recreate_database(admin_url: str, name: str, *, create: bool) -> str:
    """Drop the database ``name`` on ``admin_url``'s server (and with ``create`` make it again); its Dagster
    storage URL (also used by research/bench_multigpu.py)."""
    import psycopg2

    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        if create:
            cur.execute(f"CREATE DATABASE {name}")
    conn.close()
    return urlunparse(urlparse(admin_url)._replace(scheme="postgresql+psycopg2", path=f"/{name}"))


def settings_config(overrides: dict) -> dict:
    """Run config of the smallest pipeline (preset ``smoke``) with ``overrides`` on top."""
    return {"resources": {"settings": {"config": {"preset": "smoke", "overrides": overrides}}}}


class Cluster:
    """Two workers (gpu, cpu) and the environment shared by them and this process."""

    def __init__(self, root: Path, env: dict[str, str], uris: list[str]) -> None:
        self.root, self.env, self.uris = root, env, uris
        self.workers: dict[QueueName, subprocess.Popen] = {}

    def spec(self, queue: QueueName) -> WorkerSpec:
        return WorkerSpec(queue=queue, name=f"g3test-{queue.value}")

    def start(self, queue: QueueName) -> None:
        spec = self.spec(queue)
        self.workers[queue] = start_worker(spec, self.root / f"celery-{queue.value}", self.root / f"{queue}.log",
                                           self.env)
        wait_for_workers(Deployment.from_env(self.env), [spec.node_name])

    def kill(self, queue: QueueName) -> None:
        """SIGKILL the worker's whole process group (Celery main process and its pool process)."""
        proc = self.workers.pop(queue)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def stop(self) -> None:
        for queue, proc in list(self.workers.items()):
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
            del self.workers[queue]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, moto_s3, shared_data):  # noqa: F811
    import boto3
    import redis

    broker = _redis_url()
    redis.Redis.from_url(broker).flushdb()
    root = tmp_path_factory.mktemp("celery")
    home = root / "dagster_home"
    home.mkdir()
    instance_yaml = package_data.instance_yaml()  # gpu pool: 1 slot, as for 1 GPU
    pg_url = _postgres_database()
    (home / "dagster.yaml").write_text(instance_yaml + f"\nstorage:\n  postgres:\n    postgres_url: {pg_url}\n")
    s3 = boto3.client("s3", endpoint_url=moto_s3, region_name="us-east-1")
    uris = []
    for name in IMAGES:
        key = f"inbox/{Path(name).name}"
        s3.upload_file(str(shared_data / "inputs" / name), BUCKET, key)
        uris.append(f"s3://{BUCKET}/{key}")
    env = {
        "DAGSTER_HOME": str(home), "GLIMPSE3D_EXECUTOR": "celery", "GLIMPSE3D_BROKER_URL": broker,
        "GLIMPSE3D_STORAGE": f"s3://{BUCKET}/celery", "GLIMPSE3D_S3_ENDPOINT": moto_s3,
        "GLIMPSE3D_INBOX": f"s3://{BUCKET}/inbox", "GLIMPSE3D_MLFLOW_URI": f"sqlite:///{root / 'mlflow.db'}",
        "GLIMPSE3D_DEVICE": "cpu", WORKER_LOST_ENV: str(LOST_AFTER_S),
    }
    patch = pytest.MonkeyPatch()
    for name, value in env.items():
        patch.setenv(name, value)
    cluster = Cluster(root, dict(os.environ), uris)
    try:
        for queue in QueueName:
            cluster.start(queue)
        yield cluster
    finally:
        cluster.stop()
        patch.undo()
        recreate_database(require_service("GLIMPSE3D_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"),
                          PG_DATABASE, create=False)


def _instance():
    from dagster import DagsterInstance

    return DagsterInstance.get()  # the shared one in DAGSTER_HOME


def _image_then_variant(instance, key: str, uri: str, overrides: dict):
    from glimpse3d_assets.jobs import IMAGE_JOB, VARIANT_JOB
    from glimpse3d_assets.partitions import image_variant_key
    from glimpse3d_assets.sensors import source_run_config

    first = execute_partition(IMAGE_JOB, key, instance,
                              run_config={**source_run_config(uri), **settings_config(overrides)})
    if not first.success:
        return first, None
    return first, execute_partition(VARIANT_JOB, str(image_variant_key(key, VARIANT)), instance,
                                    run_config=settings_config(overrides))


def _workers_by_step(instance, run_id: str) -> dict[str, list[str]]:
    """Step key -> the Celery workers that reported executing it (dagster-celery's engine events)."""
    found: dict[str, list[str]] = {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or event.event_type_value != "ENGINE_EVENT" or not event.step_key:
            continue
        metadata = event.engine_event_data.metadata or {}
        if WORKER_EVENT in metadata:
            found.setdefault(event.step_key, []).append(metadata[WORKER_EVENT].value)
    return found


def _queue_of_steps(job_name: str) -> dict[str, str]:
    """Step key -> the queue its op tags name (what routing must honour)."""
    job = reconstructable_job(job_name).get_definition()
    return {node.name: node.tags.get(CELERY_QUEUE_TAG, CPU_QUEUE) for node in job.graph.node_dict.values()}


def _steps_run(instance, run_id: str) -> set[str]:
    return {r.dagster_event.step_key for r in instance.all_logs(run_id)
            if r.dagster_event and r.dagster_event.event_type_value == "STEP_SUCCESS"}


def test_three_images_route_gpu_steps_to_gpu_worker(cluster):
    import s3fs

    from glimpse3d_assets.jobs import IMAGE_JOB, VARIANT_JOB
    from glimpse3d_assets.partitions import images_partitions

    instance = _instance()
    keys = [Path(uri).stem for uri in cluster.uris]
    instance.add_dynamic_partitions(images_partitions.name, keys)
    # One image after the other: Dagster's execute_job is not thread-safe (it reconfigures logging per run).
    results = [_image_then_variant(instance, key, uri, {}) for key, uri in zip(keys, cluster.uris, strict=True)]
    for key, (image_run, variant_run) in zip(keys, results, strict=True):
        assert image_run.success and variant_run is not None and variant_run.success, key

    gpu_node, cpu_node = (cluster.spec(q).node_name for q in (QueueName.gpu, QueueName.cpu))
    seen_queues = set()
    for job_name, index in ((IMAGE_JOB, 0), (VARIANT_JOB, 1)):
        queues = _queue_of_steps(job_name)
        for result in (r[index] for r in results):
            workers = _workers_by_step(instance, result.run_id)
            assert set(workers) == set(queues), (job_name, workers)
            for step, queue in queues.items():
                assert workers[step] == [gpu_node if queue == GPU_QUEUE else cpu_node], (step, workers[step])
                seen_queues.add(queue)
    assert seen_queues == {GPU_QUEUE, CPU_QUEUE}

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": os.environ["GLIMPSE3D_S3_ENDPOINT"]})
    for key in keys:
        exports = fs.ls(f"{BUCKET}/celery/exports/{key}/{VARIANT}", detail=False)
        assert exports, key
        assert any(p.endswith("manifest.json") for p in fs.find(f"{BUCKET}/celery/exports/{key}/{VARIANT}"))


def test_killed_gpu_worker_fails_run_and_the_rerun_resumes_at_the_killed_step(cluster):
    from dagster import AssetKey, AssetRecordsFilter, DagsterRunStatus, RunsFilter

    from glimpse3d_assets.assets.common import IMAGE_LEVEL_ASSETS, STAGE_NAMES
    from glimpse3d_assets.io_manager import storage_path
    from glimpse3d_assets.jobs import VARIANT_JOB
    from glimpse3d_assets.partitions import image_variant_key, images_partitions
    from glimpse3d_assets.runs import FINGERPRINT_TAG, fingerprint
    from glimpse3d_cli.recovery import plan

    instance = _instance()
    key = Path(cluster.uris[0]).stem
    if not instance.has_dynamic_partition(images_partitions.name, key):  # run alone: make the image first
        instance.add_dynamic_partitions(images_partitions.name, [key])
        first, _ = _image_then_variant(instance, key, cluster.uris[0], {})
        assert first.success
    slow = {"optimize": SLOW_OPTIMIZE}
    tags = {FINGERPRINT_TAG: fingerprint("celery test", slow)}  # what `glimpse3d run` derives from photo + config
    partition = str(image_variant_key(key, VARIANT))
    killed = threading.Event()

    def kill_during_optimize():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            for run in instance.get_runs(RunsFilter(job_name=VARIANT_JOB, statuses=[DagsterRunStatus.STARTED])):
                if "optimized_gaussians" in _workers_by_step(instance, run.run_id):
                    cluster.kill(QueueName.gpu)
                    killed.set()
                    return
            time.sleep(0.5)

    killer = threading.Thread(target=kill_during_optimize)
    killer.start()
    failed = execute_partition(VARIANT_JOB, partition, instance, run_config=settings_config(slow), tags=tags)
    killer.join()
    assert killed.is_set() and not failed.success
    assert instance.get_run_by_id(failed.run_id).status == DagsterRunStatus.FAILURE
    messages = [str(r.dagster_event.event_specific_data) + r.dagster_event.message
                for r in instance.all_logs(failed.run_id) if r.dagster_event]
    gpu_node = cluster.spec(QueueName.gpu).node_name
    assert any("WorkerLost" in m and gpu_node in m and "optimized_gaussians" in m for m in messages)
    done_before = _steps_run(instance, failed.run_id)
    assert {"multiview", "enhanced_views"} <= done_before and "optimized_gaussians" not in done_before

    cluster.start(QueueName.gpu)
    variant_assets = [a for a in [*STAGE_NAMES, "quality_metrics"] if a not in IMAGE_LEVEL_ASSETS]
    storage = storage_path(os.environ["GLIMPSE3D_STORAGE"], os.environ["GLIMPSE3D_S3_ENDPOINT"])
    todo = plan(instance, variant_assets, partition, tags[FINGERPRINT_TAG], storage, force=False)
    assert todo == ["optimized_gaussians", "refined_gaussians", "exports", "quality_metrics"]

    def count(asset: str) -> int:
        return len(instance.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[partition]), limit=100).records)

    before = {asset: count(asset) for asset in variant_assets}
    retry = execute_partition(VARIANT_JOB, partition, instance, run_config=settings_config(slow), tags=tags,
                              assets=todo)
    assert retry.success
    redone = _steps_run(instance, retry.run_id)
    assert "optimized_gaussians" in redone and "exports" in redone
    assert not redone & done_before, redone & done_before
    assert {asset: count(asset) - before[asset] for asset in variant_assets} == {
        asset: int(asset in todo) for asset in variant_assets}  # the finished steps were not recomputed
    assert plan(instance, variant_assets, partition, tags[FINGERPRINT_TAG], storage, force=False) == []
