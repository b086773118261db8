"""Images/hour through the asset graph with 1 and with N GPUs (or Celery gpu workers) of one host (issue 16).

Each setting gets a fresh Dagster instance (SQLite under a new DAGSTER_HOME, or ``--postgres``), storage folder
and GPU lease folder, and the ``gpu`` pool sized N x ``--slots``. Every image is submitted at once, one
orchestrating process per image (image job, then variant job: a backfill's runs, all launched together;
Dagster's execute_job is not thread-safe). Images: the bundled examples/images, then ``--inputs`` folders.

* ``--executor multiprocess``: ``GLIMPSE3D_GPUS`` = the first N GPUs; each step is a process of its run; the GPU
  steps lease a device (glimpse3d_core.gpu_lease).
* ``--executor celery``: N ``gpu`` workers, worker i pinned to GPU i (``glimpse3d worker --queue gpu --gpu i``),
  plus one ``cpu`` worker of ``--cpu-concurrency`` processes; broker ``--broker`` (a local Redis).

The ``gpu`` pool is sized as ``glimpse3d run`` sizes it (``GpuLeaseConfig.pool_size``: two per lease slot).

Reported per setting: wall seconds, images/hour, the efficiency against N x the 1-GPU rate; from the Dagster
events, every GPU step's device, slot and lease interval (metadata ``gpu_host_id``, ``gpu_slots``,
``gpu_start``, ``gpu_end``), checked that no two steps ever held one slot at once; nvidia-smi sampled every
0.5 s into ``<out>/multigpu_<executor>_<N>gpu.csv`` and each GPU's mean utilisation from it.
Without an ffmpeg binary the variant job stops after refined_gaussians (``--through``): exports writes the MP4.

    python3 research/bench_multigpu.py --gpus 1 2 [--executor multiprocess|celery] [--images 16] [--preset quality]
    python3 research/bench_multigpu.py --executor celery --device cpu --preset smoke --images 6 --gpus 1 2 \\
        --postgres postgresql://postgres@127.0.0.1:5432/test      # orchestration scaling on a CPU machine
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUFFIXES = (".png", ".jpg", ".jpeg")
VARIANT = "default"
PG_DATABASE = "glimpse3d_multigpu_bench"


def images(count: int, roots: list[Path]) -> list[Path]:
    """The first ``count`` images under ``roots`` (each root's files sorted, roots in order)."""
    found = [p for root in roots if root.is_dir()
             for p in sorted(root.rglob("*")) if p.suffix.lower() in SUFFIXES]
    if len(found) < count:
        raise SystemExit(f"only {len(found)} images under {[str(r) for r in roots]}")
    return found[:count]


def run_image(key: str, uri: str, settings: dict, through: str) -> bool:
    """Both jobs of one image (the variant job up to the asset ``through``)."""
    from dagster import DagsterInstance

    from glimpse3d_assets.assets.variant_stages import VARIANT_ASSETS
    from glimpse3d_assets.executors import execute_partition
    from glimpse3d_assets.jobs import IMAGE_JOB, VARIANT_JOB
    from glimpse3d_assets.partitions import image_variant_key
    from glimpse3d_assets.sensors import source_run_config

    run_config = {"resources": {"settings": {"config": settings}}}
    instance = DagsterInstance.get()
    if not execute_partition(IMAGE_JOB, key, instance, run_config={**source_run_config(uri), **run_config}).success:
        return False
    names = [a.key.to_user_string() for a in VARIANT_ASSETS]
    return execute_partition(VARIANT_JOB, str(image_variant_key(key, VARIANT)), instance, run_config=run_config,
                             assets=names[: names.index(through) + 1]).success


def _image_process(key: str, uri: str, settings: dict, through: str, done) -> None:
    """One image in its own process group (so that a deadline ends its Dagster step processes with it)."""
    os.setpgrp()
    try:
        ok = run_image(key, uri, settings, through)
    except Exception:  # a failed image; the traceback is in this process's output
        import traceback

        traceback.print_exc()
        ok = False
    done.put((key, ok, time.time()))


def gpu_steps(instance) -> list[dict]:
    """Every materialisation that recorded a GPU lease: asset, partition, GPU, slots, lease interval, worker."""
    from dagster import DagsterEventType, EventRecordsFilter

    records = instance.get_event_records(EventRecordsFilter(event_type=DagsterEventType.ASSET_MATERIALIZATION),
                                         limit=100_000)
    steps = []
    for record in records:
        mat = record.asset_materialization
        meta = {k: v.value for k, v in (mat.metadata or {}).items()}
        if "gpu_host_id" in meta:
            steps.append({"asset": mat.asset_key.to_user_string(), "partition": str(mat.partition),
                          "gpu": meta["gpu_host_id"], "slots": meta["gpu_slots"].split(","), "start": meta["gpu_start"],
                          "end": meta["gpu_end"], "wait_s": meta["gpu_wait_s"]})
    return steps


def overlaps(steps: list[dict]) -> int:
    """Pairs of steps that held the same (GPU, slot) at the same time (must be 0)."""
    by_slot = defaultdict(list)
    for s in steps:
        for slot in s["slots"]:
            by_slot[(s["gpu"], slot)].append((s["start"], s["end"]))
    bad = 0
    for intervals in by_slot.values():
        intervals.sort()
        bad += sum(b[0] < a[1] for a, b in itertools.pairwise(intervals))
    return bad


def utilisation(csv: Path) -> dict[str, float]:
    """Mean utilisation.gpu (%) per GPU index from an nvidia-smi CSV."""
    per: dict[str, list[float]] = defaultdict(list)
    for line in csv.read_text().splitlines()[1:]:
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3 and parts[2].split()[0].isdigit():
            per[parts[1]].append(float(parts[2].split()[0]))
    return {gpu: round(sum(v) / len(v), 1) for gpu, v in per.items() if v}


def start_celery_workers(n: int, args, root: Path) -> list[subprocess.Popen]:
    """N gpu workers (worker i pinned to GPU i) and one cpu worker; returns once every one answers a ping."""
    from glimpse3d_assets.executors import Deployment
    from glimpse3d_cli.worker import QueueName, WorkerSpec, start_worker, wait_for_workers

    gpus = [args.first_gpu + i for i in range(n)]
    specs = [WorkerSpec(queue=QueueName.gpu, gpu=i, name=f"bench-gpu{i}") for i in gpus]
    specs.append(WorkerSpec(queue=QueueName.cpu, concurrency=args.cpu_concurrency, name="bench-cpu"))
    procs = [start_worker(s, root / f"cfg-{s.name}", root / f"{s.name}.log") for s in specs]
    wait_for_workers(Deployment.from_env(), [s.node_name for s in specs], timeout_s=300)
    return procs


def bench(paths: list[Path], n: int, args, root: Path) -> dict:
    from dagster import DagsterInstance

    from glimpse3d_assets.package_data import instance_yaml
    from glimpse3d_assets.partitions import images_partitions
    from glimpse3d_core.gpu_lease import GpuLeaseConfig
    from tests.test_celery import recreate_database

    root.mkdir()
    home = root / "home"
    home.mkdir()
    storage = ""
    if args.postgres:
        url = recreate_database(args.postgres, PG_DATABASE, create=True)
        storage = f"\nstorage:\n  postgres:\n    postgres_url: {url}\n"
    (home / "dagster.yaml").write_text(instance_yaml() + storage)
    os.environ.update({
        "DAGSTER_HOME": str(home), "GLIMPSE3D_EXECUTOR": args.executor, "GLIMPSE3D_STORAGE": str(root / "storage"),
        "GLIMPSE3D_INBOX": "", "GLIMPSE3D_MLFLOW_URI": f"sqlite:///{root / 'mlflow.db'}",
        "GLIMPSE3D_GPU_SLOTS": str(args.slots), "GLIMPSE3D_GPU_LEASE_DIR": str(root / "leases"),
        # every step process would otherwise start a thread per core: N images x steps x cores threads
        "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
    })
    os.environ["GLIMPSE3D_GPUS"] = ",".join(str(args.first_gpu + i) for i in range(n))
    instance = DagsterInstance.get()
    instance.event_log_storage.set_concurrency_slots("gpu", GpuLeaseConfig.from_env().pool_size)
    if args.executor == "celery":
        os.environ.pop("GLIMPSE3D_GPUS")  # a pinned worker sees only its own GPU
        os.environ["GLIMPSE3D_BROKER_URL"] = args.broker
        import redis

        redis.Redis.from_url(args.broker).flushdb()
    keys = [f"{p.parent.name}-{p.stem}".lower().replace("_", "-") for p in paths]
    instance.add_dynamic_partitions(images_partitions.name, keys)
    workers = start_celery_workers(n, args, root) if args.executor == "celery" else []
    csv = args.out / f"multigpu_{args.executor}_{n}gpu.csv"
    query = ["nvidia-smi", "--query-gpu=timestamp,index,utilization.gpu,memory.used", "--format=csv", "-lms", "500"]
    smi = subprocess.Popen(query, stdout=csv.open("w")) if args.device == "cuda" and shutil.which("nvidia-smi") \
        else None
    settings = {"preset": args.preset, "device": args.device}
    ctx = mp.get_context("spawn")
    done = ctx.Queue()
    procs = [ctx.Process(target=_image_process, args=(k, str(p), settings, args.through, done))
             for k, p in zip(keys, paths, strict=True)]
    start = time.time()
    for proc in procs:
        proc.start()
    finished: list[tuple[str, bool, float]] = []
    try:
        while len(finished) < len(procs) and time.time() - start < args.deadline_s:
            try:
                finished.append(done.get(timeout=1.0))
            except queue.Empty:
                continue
    finally:
        for proc in procs:  # past the deadline: end each image's process group (its Dagster step processes too)
            if proc.is_alive():
                os.killpg(proc.pid, signal.SIGKILL)
            proc.join()
        for worker in workers:
            os.killpg(worker.pid, signal.SIGTERM)
        for worker in workers:
            worker.wait(timeout=60)
        if smi:
            smi.terminate()
            smi.wait()
    ok = [f for f in finished if f[1]]
    ends = sorted(f[2] - start for f in ok)
    seconds = ends[-1] if len(ok) == len(procs) else time.time() - start
    steps = gpu_steps(instance)
    per_gpu = defaultdict(int)
    for s in steps:
        per_gpu[s["gpu"]] += 1
    result = {"executor": args.executor, "gpus": n, "slots": args.slots, "images": len(paths), "succeeded": len(ok),
              "seconds": round(seconds, 1), "all_done": len(ok) == len(procs),
              "images_per_hour": round(len(ok) * 3600 / seconds, 1),
              # between the first and the last image done: the rate once the pipeline is full
              "steady_images_per_hour": round((len(ends) - 1) * 3600 / (ends[-1] - ends[0]), 1)
              if len(ends) > 2 else None, "completion_s": [round(e, 1) for e in ends],
              "gpu_steps": len(steps), "steps_per_gpu": dict(sorted(per_gpu.items())),
              "slot_overlaps": overlaps(steps), "mean_util_pct": utilisation(csv) if smi else {},
              "mean_lease_wait_s": round(sum(s["wait_s"] for s in steps) / max(1, len(steps)), 2)}
    (args.out / f"multigpu_{args.executor}_{n}gpu_steps.json").write_text(json.dumps(steps, indent=0))
    if args.postgres:
        recreate_database(args.postgres, PG_DATABASE, create=False)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 2], help="GPUs (celery: gpu workers) per run")
    parser.add_argument("--executor", choices=["multiprocess", "celery"], default="multiprocess")
    parser.add_argument("--first-gpu", type=int, default=0, help="use GPUs first-gpu .. first-gpu + N - 1")
    parser.add_argument("--slots", type=int, default=1, help="steps at once per GPU")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--inputs", type=Path, nargs="*", default=[REPO.parent / "shared" / "data" / "inputs"],
                        help="folders of more images, after examples/images")
    parser.add_argument("--preset", default="quality")
    parser.add_argument("--device", default="cuda", help="cpu: the orchestration alone (GPU stages on the CPU)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per step process")
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/12", help="celery: the broker (flushed)")
    parser.add_argument("--cpu-concurrency", type=int, default=8, help="celery: processes of the cpu worker")
    parser.add_argument("--postgres", default=None, help="server URL: Dagster storage on PostgreSQL, not SQLite")
    parser.add_argument("--deadline-s", type=float, default=3600, help="stop waiting after this long: images/hour "
                        "then counts the images done by then")
    parser.add_argument("--through", default=None, help="last variant asset (default exports, or "
                        "refined_gaussians without an ffmpeg binary)")
    parser.add_argument("--out", type=Path, default=REPO / "research" / "results")
    args = parser.parse_args()
    if args.through is None:
        import imageio_ffmpeg

        try:
            imageio_ffmpeg.get_ffmpeg_exe()
            args.through = "exports"
        except (RuntimeError, ImportError):  # no binary (the package's wheel ships one)
            args.through = "refined_gaussians"
    args.out.mkdir(parents=True, exist_ok=True)
    paths = images(args.images, [REPO / "examples" / "images", *args.inputs])
    import torch

    device = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    print(f"{len(paths)} images, preset {args.preset}, {args.executor}, through {args.through}, "
          f"{os.cpu_count()} CPU cores, {torch.cuda.device_count()} x {device}", flush=True)
    report = {"device": device, "executor": args.executor, "preset": args.preset, "through": args.through,
              "images": len(paths), "runs": []}
    saved = args.out / f"multigpu_{args.executor}.json"
    if saved.exists():  # runs with other GPU counts from an earlier call, same device and settings: kept
        earlier = json.loads(saved.read_text())
        if all(earlier.get(k) == report[k] for k in ("device", "preset", "through", "images")):
            report["runs"] = [r for r in earlier["runs"] if r["gpus"] not in args.gpus]
    with tempfile.TemporaryDirectory(prefix="g3multigpu-") as tmp:
        for n in args.gpus:
            result = bench(paths, n, args, Path(tmp) / f"n{n}")
            report["runs"] = sorted([*report["runs"], result], key=lambda r: r["gpus"])
            print(json.dumps(result), flush=True)
            saved.write_text(json.dumps(report, indent=1))
    for key, rate in (("efficiency", "images_per_hour"), ("steady_efficiency", "steady_images_per_hour")):
        rates = {r["gpus"]: r[rate] for r in report["runs"] if r[rate] and (r["all_done"] or rate.startswith("s"))}
        if rates.get(1):
            report[key] = {n: round(value / (n * rates[1]), 3) for n, value in rates.items()}
            print(f"{key} ({rate}) vs N x 1 GPU:", report[key], flush=True)
    saved.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
