"""SSIM forward + backward time of each implementation in research/gpu_pipeline.py's ``SSIMS`` (the stage's own,
``glimpse3d_core.imaging.ssim``, is ``sepconv`` on a CPU and ``matmul`` on CUDA), side by side in one process, on
the CPU (or ``--device cuda``): 4 views of SIZE² RGB, float32, as the optimisation loss computes it.

    python3 research/bench_ssim.py [--sizes 128 256] [--threads 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_pipeline import SSIMS


def seconds_per_call(fn, a: torch.Tensor, b: torch.Tensor, repeats: int) -> float:
    """Mean seconds of ``fn(a, b).sum().backward()`` over ``repeats`` calls, after two warm-up calls."""
    for _ in range(2):
        fn(a, b).sum().backward()
    if a.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn(a, b).sum().backward()
    if a.is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    print(f"device {args.device}, {torch.get_num_threads()} CPU threads; ms per forward + backward")
    print(f"{'size':>6}" + "".join(f"{name:>10}" for name in SSIMS))
    for size in args.sizes:
        a = torch.rand(args.views, size, size, 3, generator=generator).to(args.device).requires_grad_()
        b = torch.rand(args.views, size, size, 3, generator=generator).to(args.device)
        row = [seconds_per_call(fn, a, b, args.repeats) * 1e3 for fn in SSIMS.values()]
        print(f"{size:>6}" + "".join(f"{ms:>10.1f}" for ms in row), flush=True)


if __name__ == "__main__":
    main()
