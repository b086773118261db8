"""Full-size SyncDreamer on a GPU with random weights: strict checkpoint load, then 16 views for one image.

What it measures (printed as JSON, also written to $OUT/gpu_syncdreamer.json when OUT is set):
1. build the released architecture with random initial weights, save it as a Lightning-style
   ``{"state_dict": ...}`` checkpoint (float32, the 5.57 GB of the real file) and load it back through
   :func:`load_syncdreamer` (torch.load weights_only + mmap, strict, fp16 on CUDA): load time;
2. one image (examples/images/teapot.png) -> 16 views, 50 DDIM steps, cfg 2.0, eta 1.0: wall time and peak
   CUDA memory for each ``batch_view_num`` asked for (the first value runs all 50 steps; the others
   ``--short-steps`` steps, extrapolated to 50), each after a one-step warm-up (cuDNN autotuning).

Usage: python research/gpu_syncdreamer.py [--batch-view-nums 8 16 4] [--short-steps 5] [--ckpt PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_models import save_syncdreamer

from glimpse3d_core.models.syncdreamer import (
    SamplerConfig,
    SyncDreamerConfig,
    SyncDreamerMultiview,
    SyncDreamerMultiviewConfig,
    load_syncdreamer,
)
from glimpse3d_core.types import ObjectImage

REPO = Path(__file__).resolve().parents[1]
FULL_STEPS = 50


def read_image(path: Path) -> ObjectImage:
    rgba = np.asarray(Image.open(path).convert("RGBA"), dtype=np.float32) / 255.0
    return ObjectImage(rgba[..., :3].copy(), rgba[..., 3].copy(), path.stem)


def run(backend: SyncDreamerMultiview, image: ObjectImage) -> dict:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    views = backend(image, input_elevation_deg=30.0)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {
        "seconds": round(seconds, 2),
        "peak_allocated_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2),
        "peak_reserved_gb": round(torch.cuda.max_memory_reserved() / 1e9, 2),
        "views_shape": list(views.rgb.shape),
        "finite": bool(np.isfinite(views.rgb).all()),
        "mean_alpha": round(float(views.alpha.mean()), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-view-nums", type=int, nargs="+", default=[8, 16, 4])
    parser.add_argument("--short-steps", type=int, default=5)
    parser.add_argument("--ckpt", type=Path, default=None, help="a real checkpoint (default: random weights)")
    parser.add_argument("--image", type=Path, default=REPO / "examples" / "images" / "teapot.png")
    args = parser.parse_args()
    torch.backends.cudnn.benchmark = True
    report: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.ckpt
        if ckpt is None:
            ckpt = Path(tmp) / "syncdreamer-pretrain.ckpt"
            start = time.perf_counter()
            save_syncdreamer(ckpt, SyncDreamerConfig())
            report["write_random_checkpoint_s"] = round(time.perf_counter() - start, 1)
            report["checkpoint_gb"] = round(ckpt.stat().st_size / 1e9, 3)
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        model = load_syncdreamer(ckpt, "cuda", torch.float16)
        torch.cuda.synchronize()
        report["strict_load_s"] = round(time.perf_counter() - start, 1)
        report["weights_gb"] = round(torch.cuda.memory_allocated() / 1e9, 2)

    image = read_image(args.image)
    runs = []
    for i, bvn in enumerate(args.batch_view_nums):
        steps = FULL_STEPS if i == 0 else args.short_steps
        warmup = SyncDreamerMultiview(model, SyncDreamerMultiviewConfig(SamplerConfig(1, 2.0, 1.0, bvn)))
        run(warmup, image)  # cuDNN autotuning for this batch size
        backend = SyncDreamerMultiview(model, SyncDreamerMultiviewConfig(SamplerConfig(steps, 2.0, 1.0, bvn)))
        result = {"batch_view_num": bvn, "steps": steps, **run(backend, image)}
        if steps != FULL_STEPS:
            result["extrapolated_50_steps_s"] = round(result["seconds"] / steps * FULL_STEPS, 1)
        runs.append(result)
        print(json.dumps(result), flush=True)
    report["runs"] = runs
    text = json.dumps(report, indent=1)
    print(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_syncdreamer.json").write_text(text)


if __name__ == "__main__":
    main()
