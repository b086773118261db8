"""Images/hour through the asset graph on the multiprocess executor with 1 and with 2 GPUs of one host (issue 16).

Each setting: a fresh DAGSTER_HOME (SQLite), storage folder and GPU lease folder; ``GLIMPSE3D_GPUS`` = the first
N GPUs, ``GLIMPSE3D_GPU_SLOTS`` = --slots, the ``gpu`` pool sized N x slots; every image submitted at once, one
orchestrating process per image (image job, then variant job; Dagster's execute_job is not thread-safe). Images:
the bundled examples/images and the shared inputs (../shared/data/inputs), the first --images of them.

Reported per setting: wall seconds, images/hour, the efficiency against N x the 1-GPU rate; from the Dagster
events, every GPU step's device, slot and lease interval (metadata ``gpu``, ``gpu_slot``, ``gpu_start``,
``gpu_end``), checked that no two steps ever held one slot at once and that every GPU was used; nvidia-smi
sampled every 0.5 s into ``<out>/multigpu_<N>gpu.csv`` and each GPU's mean utilisation from it.
Without an ffmpeg binary (imageio-ffmpeg's wheel carries one) the variant job stops after refined_gaussians
(``--through``): exports writes the turntable MP4.

    python3 research/bench_multigpu.py --gpus 1 2 [--images 16] [--preset quality] [--out research/results]
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
INPUTS = [REPO / "examples" / "images", REPO.parent / "shared" / "data" / "inputs"]
VARIANT = "default"
SUFFIXES = (".png", ".jpg", ".jpeg")


def images(count: int, roots: list[Path]) -> list[Path]:
    found = sorted(p for root in roots if root.is_dir() for p in root.rglob("*") if p.suffix.lower() in SUFFIXES)
    if len(found) < count:
        raise SystemExit(f"only {len(found)} images under {[str(r) for r in roots]}")
    return found[:count]


def run_image(key: str, uri: str, preset: str, device: str, through: str) -> bool:
    """Both jobs of one image, in a child process (its own Dagster logging)."""
    from dagster import AssetKey, DagsterInstance, execute_job

    from glimpse3d_assets.assets.variant_stages import VARIANT_ASSETS
    from glimpse3d_assets.executors import execute_partition, reconstructable_job
    from glimpse3d_assets.jobs import IMAGE_JOB, VARIANT_JOB
    from glimpse3d_assets.partitions import image_variant_key
    from glimpse3d_assets.sensors import source_run_config

    settings = {"resources": {"settings": {"config": {"preset": preset, "device": device}}}}
    instance = DagsterInstance.get()
    if not execute_partition(IMAGE_JOB, key, instance, run_config={**source_run_config(uri), **settings}).success:
        return False
    names = [a.key.to_user_string() for a in VARIANT_ASSETS]
    selection = [AssetKey(n) for n in names[: names.index(through) + 1]]
    job = reconstructable_job(VARIANT_JOB)
    partition = str(image_variant_key(key, VARIANT))
    tags = job.get_definition().get_tags_for_partition_key(partition, None)
    return execute_job(job, instance, run_config=settings, tags=tags, raise_on_error=False,
                       asset_selection=selection).success


def _image_process(key: str, uri: str, args, done) -> None:
    """One image in its own process group (so a deadline can end its Dagster step processes with it)."""
    os.setpgrp()
    try:
        ok = run_image(key, uri, args.preset, args.device, args.through)
    except Exception:  # reported as a failed image; the traceback is in this process's output
        import traceback

        traceback.print_exc()
        ok = False
    done.put((key, ok, time.time()))


def gpu_steps(instance) -> list[dict]:
    """Every materialisation that recorded a GPU lease: asset, partition, gpu, slot, lease start/end."""
    from dagster import DagsterEventType, EventRecordsFilter

    records = instance.get_event_records(EventRecordsFilter(event_type=DagsterEventType.ASSET_MATERIALIZATION),
                                         limit=100_000)
    steps = []
    for record in records:
        mat = record.asset_materialization
        meta = {k: v.value for k, v in (mat.metadata or {}).items()}
        if "gpu" in meta:
            steps.append({"asset": mat.asset_key.to_user_string(), "partition": str(mat.partition),
                          "gpu": meta["gpu_host_id"], "slot": meta["gpu_slot"], "start": meta["gpu_start"],
                          "end": meta["gpu_end"], "wait_s": meta["gpu_wait_s"]})
    return steps


def overlaps(steps: list[dict]) -> int:
    """Pairs of steps that held the same (GPU, slot) at the same time (must be 0)."""
    by_slot = defaultdict(list)
    for s in steps:
        by_slot[(s["gpu"], s["slot"])].append((s["start"], s["end"]))
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


def bench(paths: list[Path], gpus: int, slots: int, args, root: Path) -> dict:
    from dagster import DagsterInstance

    from glimpse3d_assets.partitions import images_partitions

    home = root / f"home{gpus}"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    os.environ.update({
        "DAGSTER_HOME": str(home), "GLIMPSE3D_EXECUTOR": "multiprocess", "GLIMPSE3D_STORAGE": str(root / f"s{gpus}"),
        "GLIMPSE3D_INBOX": "", "GLIMPSE3D_MLFLOW_URI": f"sqlite:///{root / f'mlflow{gpus}.db'}",
        "GLIMPSE3D_GPUS": ",".join(str(i) for i in range(gpus)), "GLIMPSE3D_GPU_SLOTS": str(slots),
        "GLIMPSE3D_GPU_LEASE_DIR": str(root / f"leases{gpus}"),
    })
    instance = DagsterInstance.get()
    instance.event_log_storage.set_concurrency_slots("gpu", gpus * slots)
    keys = [f"{p.parent.name}-{p.stem}".lower().replace("_", "-") for p in paths]
    instance.add_dynamic_partitions(images_partitions.name, keys)
    csv = args.out / f"multigpu_{gpus}gpu.csv"
    query = ["nvidia-smi", "--query-gpu=timestamp,index,utilization.gpu,memory.used", "--format=csv", "-lms", "500"]
    smi = subprocess.Popen(query, stdout=csv.open("w")) if shutil.which("nvidia-smi") else None
    start = time.time()
    ctx, done = mp.get_context("spawn"), None
    done = ctx.Queue()
    procs = [ctx.Process(target=_image_process, args=(k, str(p), args, done)) for k, p in zip(keys, paths, strict=True)]
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
        if smi:
            smi.terminate()
            smi.wait()
    ok = [f for f in finished if f[1]]
    ends = sorted(f[2] - start for f in ok)
    seconds = ends[-1] if len(ok) == len(procs) else args.deadline_s
    steps = gpu_steps(instance)
    result = {"gpus": gpus, "slots": slots, "images": len(paths), "succeeded": len(ok), "seconds": round(seconds, 1),
              "all_done": len(ok) == len(procs), "images_per_hour": round(len(ok) * 3600 / seconds, 1),
              "steady_images_per_hour": round((len(ends) - 1) * 3600 / (ends[-1] - ends[0]), 1)
              if len(ends) > 2 else None, "completion_s": [round(e, 1) for e in ends], "gpu_steps": len(steps),
              "steps_per_gpu": dict(sorted(defaultdict(int, {g: sum(s["gpu"] == g for s in steps)
                                                            for g in {s["gpu"] for s in steps}}).items())),
              "slot_overlaps": overlaps(steps), "mean_util_pct": utilisation(csv) if smi else {},
              "mean_lease_wait_s": round(sum(s["wait_s"] for s in steps) / max(1, len(steps)), 2)}
    (args.out / f"multigpu_{gpus}gpu_steps.json").write_text(json.dumps(steps, indent=0))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--slots", type=int, default=1, help="steps at once per GPU")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--preset", default="quality")
    parser.add_argument("--deadline-s", type=float, default=3600, help="stop waiting after this long: images/hour "
                        "then counts the images done by then, and the steady rate between the first and last")
    parser.add_argument("--device", default="cuda", help="cpu: a dry run of the orchestration (no GPU steps)")
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
    paths = images(args.images, INPUTS)
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    print(f"{len(paths)} images, preset {args.preset}, through {args.through}, {os.cpu_count()} CPU cores, "
          f"{torch.cuda.device_count()} x {device}", flush=True)
    report = {"device": device, "preset": args.preset, "through": args.through, "runs": []}
    saved = args.out / "multigpu.json"
    if saved.exists():  # runs of other GPU counts from an earlier call on the same device and settings
        earlier = json.loads(saved.read_text())
        if all(earlier.get(k) == report[k] for k in ("device", "preset", "through")):
            report["runs"] = [r for r in earlier["runs"] if r["gpus"] not in args.gpus]
    with tempfile.TemporaryDirectory(prefix="g3multigpu-") as tmp:
        for gpus in args.gpus:
            result = bench(paths, gpus, args.slots, args, Path(tmp))
            report["runs"] = sorted([*report["runs"], result], key=lambda r: r["gpus"])
            print(json.dumps(result), flush=True)
            (args.out / "multigpu.json").write_text(json.dumps(report, indent=1))
    rates = {r["gpus"]: r["images_per_hour"] for r in report["runs"]}
    if rates.get(1):
        report["efficiency"] = {n: round(rate / (n * rates[1]), 3) for n, rate in rates.items()}
        (args.out / "multigpu.json").write_text(json.dumps(report, indent=1))
        print("efficiency vs N x 1 GPU:", report["efficiency"])


if __name__ == "__main__":
    main()
