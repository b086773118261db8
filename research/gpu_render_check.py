"""GPU check of the rasterisers: gsplat (CUDA) against our PyTorch renderer on real splats.

For each INRIA PLY it renders an orbit of cameras chosen from the splat's bounds with both backends (both on
CUDA tensors), then prints one JSON line with: PSNR between the two RGB renders (over white) and the two alpha
maps, the median depth difference where both are opaque, per-parameter gradient cosine similarity and relative
L2 error for an L1-to-target + depth loss, and both speeds (ms per view, forward only and forward+backward).

    python research/gpu_render_check.py [--data DIR] [--size 256] [--views 4] [--iters 20]

DIR holds the splats (default: ../shared/data/splats, else .gpu_data/ in the repo, the git-ignored copy that
travels to the device).

Measured 2026-11-25 on an NVIDIA H100 80GB HBM3 (4 views of 256 px, defaults):
donut (45,624, SH 0): PSNR 140.4 dB (RGB), 140.8 dB (alpha); gradient cosine 1.0000, rel. L2 <= 1e-4 for every
parameter; gsplat 0.57 ms/view forward, 1.24 ms/view forward+backward; our torch renderer on the same GPU
9.5 / 27.3 ms/view. fruit drops (4,721, SH 3): PSNR 113.0 / 104.6 dB, cosine 1.0000; gsplat 0.42 / 0.90,
torch 3.2 / 8.1 ms/view.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from glimpse3d_core.cameras import intrinsics, look_at, orbit_position
from glimpse3d_core.io.ply import read_ply
from glimpse3d_core.render import RenderOutput, rasterize
from glimpse3d_core.types import Gaussians

REPO = Path(__file__).resolve().parents[1]
SPLATS = ("gshairlod_donut_mipsplatting/fused.ply", "supersplat_fruit_drops/fruit_drops_minimal.ply")
PARAMS = ("means", "quats", "log_scales", "opacity_logits", "sh0", "shN")


def default_data_dir() -> Path:
    shared = REPO.parent / "shared" / "data" / "splats"
    return shared if shared.is_dir() else REPO / ".gpu_data"


def cameras_around(g: Gaussians, n_views: int, size: int, elevation_deg: float = 25.0, fill: float = 0.8):
    """An orbit looking at the splat's robust centre, far enough (focal fixed) that it fills ``fill`` of the
    image: centre and radius from the 2nd..98th percentiles of the means."""
    means = g.means.detach().cpu().numpy()
    lo, hi = np.percentile(means, 2, axis=0), np.percentile(means, 98, axis=0)
    centre, radius = (lo + hi) / 2, float(np.linalg.norm(hi - lo) / 2)
    focal = size * 1.2
    distance = radius * focal / (fill * size / 2) + radius
    viewmats, Ks = [], []
    for i in range(n_views):
        eye = centre + orbit_position(360.0 * i / n_views, elevation_deg, distance)
        viewmats.append(look_at(eye, centre))
        Ks.append(intrinsics(focal, size, size))
    return torch.tensor(np.stack(viewmats), dtype=torch.float32), torch.tensor(np.stack(Ks), dtype=torch.float32)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(torch.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def render_with_grads(g: Gaussians, viewmats, Ks, size: int, backend: str, target: torch.Tensor):
    params = {k: v.detach().clone().requires_grad_(True) for k, v in g.tensors().items()}
    out = rasterize(Gaussians(**params), viewmats, Ks, size, size, backend=backend, background=1.0)
    loss = (out.rgb - target).abs().mean() + out.depth.mean()
    loss.backward()
    return out, {k: p.grad for k, p in params.items()}


def time_ms_per_view(fn, n_views: int, iters: int) -> float:
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1000 / (iters * n_views)


def check(path: Path, size: int, n_views: int, iters: int) -> dict:
    g = read_ply(path).to("cuda")
    viewmats, Ks = (t.cuda() for t in cameras_around(g, n_views, size))
    gen = torch.Generator(device="cuda").manual_seed(0)
    target = torch.rand(n_views, size, size, 3, device="cuda", generator=gen)
    (a, grads_a), (b, grads_b) = (render_with_grads(g, viewmats, Ks, size, k, target) for k in ("gsplat", "torch"))
    a, b = (RenderOutput(o.rgb.detach(), o.alpha.detach(), o.depth.detach(), o.info) for o in (a, b))
    both = (a.alpha > 0.5) & (b.alpha > 0.5)
    grads = {}
    for name in PARAMS:
        ga, gb = grads_a[name].flatten().double(), grads_b[name].flatten().double()
        if ga.numel() == 0:
            continue
        cos = float(torch.nn.functional.cosine_similarity(ga, gb, dim=0))
        rel = float((ga - gb).norm() / ga.norm().clamp_min(1e-30))
        grads[name] = {"cosine": round(cos, 5), "rel_l2": round(rel, 5)}

    def fwd(backend):
        with torch.no_grad():
            rasterize(g, viewmats, Ks, size, size, backend=backend, background=1.0)

    def fwd_bwd(backend):
        params = {k: v.detach().requires_grad_(True) for k, v in g.tensors().items()}
        out = rasterize(Gaussians(**params), viewmats, Ks, size, size, backend=backend, background=1.0)
        ((out.rgb - target).abs().mean() + out.depth.mean()).backward()

    speed = {
        backend: {
            "fwd_ms_per_view": round(time_ms_per_view(lambda b=backend: fwd(b), n_views, iters), 3),
            "fwd_bwd_ms_per_view": round(time_ms_per_view(lambda b=backend: fwd_bwd(b), n_views, iters), 3),
        }
        for backend in ("gsplat", "torch")
    }
    return {
        "splat": path.parent.name,
        "gaussians": len(g),
        "sh_degree": g.sh_degree,
        "views": n_views,
        "size": size,
        "mean_alpha": round(float(a.alpha.mean()), 4),
        "psnr_rgb_db": round(psnr(a.rgb, b.rgb), 2),
        "psnr_alpha_db": round(psnr(a.alpha, b.alpha), 2),
        "max_abs_rgb": round(float((a.rgb - b.rgb).abs().max()), 5),
        "depth_median_abs_diff": float((a.depth - b.depth)[both].abs().median()) if both.any() else None,
        "grads": grads,
        "speed": speed,
        "device": torch.cuda.get_device_name(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data_dir())
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--iters", type=int, default=20)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU")
    for rel in SPLATS:
        print(json.dumps(check(args.data / rel, args.size, args.views, args.iters)), flush=True)


if __name__ == "__main__":
    main()
