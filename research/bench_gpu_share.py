"""Several optimize steps sharing one GPU (issue 19, "a full GPU in batch"): fits/hour at K = 1, 2, 4 at once.

For each K: K processes (spawned, as the multiprocess executor's steps are), each holding one of K lease slots of
GPU 0 (``glimpse3d_core.gpu_lease``, ``GLIMPSE3D_GPU_SLOTS=K``), warm up (gsplat load, cuDNN), wait at a barrier,
then run --fits optimisations each (the preset's optimize config, --iterations steps) on the objects saved by
``research/gpu_pipeline.py --save-speed-input``. Reported: wall seconds from the first start to the last end,
fits/hour, each process's step rate and peak memory. ``gpu_lease.default_slots`` gives a GPU one slot per
``gpu_lease.SLOT_GIB`` of memory (at most 6); a step larger than a slot takes several (SDXL enhance, 13 GiB, takes one).

    python3 research/bench_gpu_share.py --speed-input speed.pt [--k 1 2 4] [--fits 3] [--iterations 1000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path


def worker(k: int, args, lease_dir: str, barrier, results) -> None:
    os.environ.update({"GLIMPSE3D_GPUS": "0", "GLIMPSE3D_GPU_SLOTS": str(k), "GLIMPSE3D_GPU_LEASE_DIR": lease_dir})
    import torch

    from glimpse3d_core.config import PipelineConfig
    from glimpse3d_core.gpu_lease import gpu_lease
    from glimpse3d_core.stages import optimize

    cfg = PipelineConfig.from_dict({"preset": args.preset}).optimize.model_copy(
        update={"iterations": args.iterations})
    with gpu_lease() as lease:
        objects = []
        for _name, g0, views, _gt in torch.load(args.speed_input, weights_only=False):
            views.rgb, views.alpha = views.rgb.astype("float32"), views.alpha.astype("float32")
            objects.append((g0.to(lease.device), views))
        optimize.run(objects[0][0], objects[0][1], cfg.model_copy(update={"iterations": 20}), device=lease.device)
        torch.cuda.reset_peak_memory_stats()
        barrier.wait()
        start = time.time()
        rates = [optimize.run(*objects[i % len(objects)], cfg, seed=i, device=lease.device).iterations_per_second
                 for i in range(args.fits)]
        results.put({"slot": lease.slots[0], "start": start, "end": time.time(), "it_s": rates,
                     "peak_gib": torch.cuda.max_memory_allocated() / 2**30})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed-input", type=Path, required=True)
    parser.add_argument("--k", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--fits", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--preset", default="quality")
    parser.add_argument("--out", type=Path, default=Path("research/results/gpu_share.json"))
    args = parser.parse_args()
    import torch

    report = {"device": torch.cuda.get_device_name(0), "memory_gib": torch.cuda.get_device_properties(0).total_memory
              / 2**30, "preset": args.preset, "iterations": args.iterations, "fits_per_process": args.fits, "k": {}}
    ctx = mp.get_context("spawn")
    for k in args.k:
        barrier, results = ctx.Barrier(k), ctx.Queue()
        with tempfile.TemporaryDirectory(prefix="g3share-") as leases:
            procs = [ctx.Process(target=worker, args=(k, args, leases, barrier, results)) for _ in range(k)]
            for p in procs:
                p.start()
            rows = [results.get(timeout=600) for _ in procs]
            for p in procs:
                p.join()
        wall = max(r["end"] for r in rows) - min(r["start"] for r in rows)
        report["k"][k] = {"wall_s": round(wall, 2), "fits_per_hour": round(k * args.fits * 3600 / wall, 1),
                          "slots": sorted(r["slot"] for r in rows), "it_s_per_process":
                          [round(sum(r["it_s"]) / len(r["it_s"]), 1) for r in rows],
                          "peak_gib_per_process": [round(r["peak_gib"], 2) for r in rows]}
        print(f"K={k}: {json.dumps(report['k'][k])}", flush=True)
    best = max(report["k"], key=lambda k: report["k"][k]["fits_per_hour"])
    report["best_k"] = best
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"best K = {best} on {report['device']} ({report['memory_gib']:.0f} GiB)")


if __name__ == "__main__":
    main()
