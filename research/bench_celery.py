"""Images/hour through the asset graph on the Celery executor with 1 and with 2 workers per queue, on this machine.

Each setting: a fresh Redis database and Postgres database (the shared Dagster instance), a local storage folder,
K ``gpu`` + K ``cpu`` workers (``glimpse3d_cli.worker.start_worker``; on a CPU-only machine the gpu workers run
their stages on the CPU), the ``gpu`` pool sized K, and all images submitted at once, one orchestrating process
per image (Dagster's execute_job is not thread-safe). Sizes are the ``smoke`` preset's
(glimpse3d_core.config), so the numbers
measure orchestration + scaling, not the quality pipeline.

    python3 research/bench_celery.py [--images 6] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import signal
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse, urlunparse

REPO = Path(__file__).resolve().parents[1]
INPUTS = REPO.parent / "shared" / "data" / "inputs"
REDIS = os.environ.get("GLIMPSE3D_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES = os.environ.get("GLIMPSE3D_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_DB = 12
PG_DATABASE = "glimpse3d_celery_bench"
VARIANT = "default"


def _pg(create: bool) -> str:
    import psycopg2

    conn = psycopg2.connect(POSTGRES)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {PG_DATABASE} WITH (FORCE)")
        if create:
            cur.execute(f"CREATE DATABASE {PG_DATABASE}")
    conn.close()
    return urlunparse(urlparse(POSTGRES)._replace(scheme="postgresql+psycopg2", path=f"/{PG_DATABASE}"))


def run_image(key: str, uri: str) -> bool:
    """Both jobs of one image (in a child process: its own Dagster logging)."""
    from dagster import DagsterInstance

    from glimpse3d_assets.executors import execute_partition
    from glimpse3d_assets.jobs import IMAGE_JOB, VARIANT_JOB
    from glimpse3d_assets.partitions import image_variant_key
    from glimpse3d_assets.sensors import source_run_config

    settings = {"resources": {"settings": {"config": {"preset": "smoke"}}}}
    instance = DagsterInstance.get()
    if not execute_partition(IMAGE_JOB, key, instance, run_config={**source_run_config(uri), **settings}).success:
        return False
    return execute_partition(VARIANT_JOB, str(image_variant_key(key, VARIANT)), instance, run_config=settings).success


def bench(images: list[Path], workers: int, root: Path) -> float:
    """Seconds to take every image through both jobs with ``workers`` gpu + ``workers`` cpu workers."""
    import redis
    from dagster import DagsterInstance

    from glimpse3d_assets.executors import Deployment
    from glimpse3d_assets.package_data import instance_yaml
    from glimpse3d_assets.partitions import images_partitions
    from glimpse3d_cli.worker import QueueName, WorkerSpec, start_worker, wait_for_workers

    broker = urlunparse(urlparse(REDIS)._replace(path=f"/{REDIS_DB}"))
    redis.Redis.from_url(broker).flushdb()
    home = root / f"home{workers}"
    home.mkdir()
    (home / "dagster.yaml").write_text(instance_yaml()
                                       + f"\nstorage:\n  postgres:\n    postgres_url: {_pg(create=True)}\n")
    os.environ.update({
        "DAGSTER_HOME": str(home), "GLIMPSE3D_EXECUTOR": "celery", "GLIMPSE3D_BROKER_URL": broker,
        "GLIMPSE3D_STORAGE": str(root / f"storage{workers}"), "GLIMPSE3D_INBOX": "",
        "GLIMPSE3D_MLFLOW_URI": f"sqlite:///{root / f'mlflow{workers}.db'}", "GLIMPSE3D_DEVICE": "cpu",
    })
    instance = DagsterInstance.get()
    instance.event_log_storage.set_concurrency_slots("gpu", workers)
    keys = [p.stem for p in images]
    instance.add_dynamic_partitions(images_partitions.name, keys)
    specs = [WorkerSpec(queue=q, name=f"bench-{q.value}{i}") for q in QueueName for i in range(workers)]
    procs = [start_worker(s, root / f"cfg-{s.name}-{workers}", root / f"{s.name}-{workers}.log") for s in specs]
    try:
        wait_for_workers(Deployment.from_env(), [s.node_name for s in specs])
        start = time.perf_counter()
        with mp.get_context("spawn").Pool(len(images)) as pool:
            ok = pool.starmap(run_image, [(k, str(p)) for k, p in zip(keys, images, strict=True)])
        seconds = time.perf_counter() - start
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=60)
        _pg(create=False)
    if not all(ok):
        raise RuntimeError(f"{ok.count(False)} image(s) failed with {workers} worker(s) per queue; see {root}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    images = sorted(INPUTS.glob("*/*_rgba.png"))[: args.images]
    if len(images) < args.images:
        raise SystemExit(f"only {len(images)} images under {INPUTS}")
    print(f"{len(images)} images, smoke sizes, {os.cpu_count()} CPU cores")
    with tempfile.TemporaryDirectory(prefix="g3bench-") as tmp:
        for workers in args.workers:
            seconds = bench(images, workers, Path(tmp))
            print(f"{workers} worker(s) per queue (gpu+cpu): {seconds:6.1f} s, "
                  f"{len(images) * 3600 / seconds:7.1f} images/hour", flush=True)


if __name__ == "__main__":
    main()
