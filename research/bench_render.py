"""CPU benchmark of the PyTorch rasteriser: forward and forward+backward time with 2 threads.

Scene: N flat Gaussians on a sphere of radius 0.4 (an object of extent ~1 at the origin, as the pipeline's
initial splats are), sized to tile the surface, opacity 0.8, random colours with SH degree 1; one camera of the
SyncDreamer rig (256 px, fx 280, distance 1.5) or the rig scaled to --size. Prints one JSON line per N.
With --ply, also a real INRIA splat seen by the first camera of research/gpu_render_check.py's orbit.

    python research/bench_render.py [--sizes 256] [--counts 10000 50000] [--threads 2] [--repeats 5] [--ply F]

Measured 2026-11-25 on the lent GPU host's CPU (Intel Xeon, idle, CUDA hidden), 2 threads, median of 5:
sphere 10k @256: fwd 0.041 s, fwd+bwd 0.071 s; 50k @256: 0.113 s / 0.194 s; 20k @128: 0.061 s / 0.101 s;
Mip-Splatting donut (45,624) @256: 0.174 s / 0.270 s. With 1 thread: 10k @256 0.16 s, 50k @256 0.50 s fwd+bwd.
On an oversubscribed machine use 1 thread: torch's intra-op threads then wait on each other (5-10x slower).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch
from gpu_render_check import cameras_around  # research/ is on sys.path when run as a script

from glimpse3d_core.cameras import orbit_rig
from glimpse3d_core.io.ply import read_ply
from glimpse3d_core.render import rasterize
from glimpse3d_core.types import Gaussians

SPHERE_RADIUS = 0.4
OPACITY = 0.8


def sphere_scene(n: int, seed: int = 0) -> Gaussians:
    """Flat Gaussians tangent to a sphere, each covering about its share of the surface."""
    gen = torch.Generator().manual_seed(seed)
    normals = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=-1)
    # rotation taking +z to the normal (flat axis along the normal): half-way quaternion
    half = torch.nn.functional.normalize(normals + torch.tensor([0.0, 0.0, 1.0 + 1e-6]), dim=-1)
    quats = torch.cat([half[:, 2:3], torch.linalg.cross(torch.tensor([[0.0, 0.0, 1.0]]).expand(n, 3), half)], -1)
    side = math.sqrt(4 * math.pi * SPHERE_RADIUS**2 / n)
    scales = torch.tensor([side * 0.6, side * 0.6, side * 0.05]).expand(n, 3)
    return Gaussians(
        means=normals * SPHERE_RADIUS,
        quats=quats,
        log_scales=scales.log().clone(),
        opacity_logits=torch.full((n,), math.log(OPACITY / (1 - OPACITY))),
        sh0=torch.randn(n, 1, 3, generator=gen) * 0.5,
        shN=torch.randn(n, 3, 3, generator=gen) * 0.1,
    )


def bench(scene: Gaussians, viewmats: torch.Tensor, Ks: torch.Tensor, size: int, repeats: int) -> dict:
    fwd, fwd_bwd = [], []
    out = None
    for _ in range(repeats + 1):  # the first run warms up allocators and is dropped
        start = time.perf_counter()
        with torch.no_grad():
            rasterize(scene, viewmats, Ks, size, size, backend="torch")
        fwd.append(time.perf_counter() - start)
        params = {k: v.clone().requires_grad_(True) for k, v in scene.tensors().items()}
        start = time.perf_counter()
        out = rasterize(Gaussians(**params), viewmats, Ks, size, size, backend="torch", background=1.0)
        (out.rgb.mean() + out.alpha.mean()).backward()
        fwd_bwd.append(time.perf_counter() - start)
    return {
        "gaussians": len(scene),
        "size": size,
        "threads": torch.get_num_threads(),
        "fwd_s": round(statistics.median(fwd[1:]), 4),
        "fwd_bwd_s": round(statistics.median(fwd_bwd[1:]), 4),
        "mean_alpha": round(float(out.alpha.detach().mean()), 3),
        "intersections": out.info["n_intersections"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256])
    parser.add_argument("--counts", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ply", type=Path, help="also time this INRIA splat")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for size in args.sizes:
        viewmats, Ks = orbit_rig(image_size=size).subset([0]).torch()
        for n in args.counts:
            print(json.dumps({"scene": "sphere", **bench(sphere_scene(n), viewmats, Ks, size, args.repeats)}))
        if args.ply:
            splat = read_ply(args.ply)
            viewmats, Ks = cameras_around(splat, 1, size)
            print(json.dumps({"scene": args.ply.parent.name, **bench(splat, viewmats, Ks, size, args.repeats)}))


if __name__ == "__main__":
    main()
