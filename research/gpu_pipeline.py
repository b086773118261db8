"""The pipeline on CUDA: seconds per image, quality on ground truth, and the optimize stage's step rate next to a
bare gsplat fitting loop on the same views and Gaussian count, measured side by side in one process.

1. gsplat's one-time JIT build is triggered first and timed apart.
2. Every object under --gt (protocol views NNN.png, e.g. research/results/tmp/gt/<name>/ from eval_quality.py):
   view 0 goes through ``run_pipeline`` (preset --preset, input camera syncdreamer16, device cuda); the first
   image is run twice and the second run counted (CUDA kernels of the other stages warm up too). The result is
   scored like research/eval_quality.py (input / novel / 16-view PSNR, SSIM, silhouette IoU) with the baselines.
3. Step rate, on the first object's target views and initial Gaussians, ``--iterations`` steps each, alternated
   ``--repeats`` times: (a) ``optimize.run`` without densification; (b) a bare loop: ``gsplat.rasterization`` on
   plain parameter tensors, the same per-view loss (L1 + D-SSIM + alpha) and views per step, one Adam per group,
   nothing else; (c) ``optimize.run`` with densification and (d) the bare loop plus gsplat's DefaultStrategy.
4. Ablation: the same objects with MVCRM refinement off (novel-view scores only).

    python3 research/gpu_pipeline.py --gt research/results/tmp/gt --out /tmp/gpu_pipeline [--preset quality]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from eval_quality import copy_baseline, render_protocol, score, table

from glimpse3d_core.config import PipelineConfig, parse_assignments
from glimpse3d_core.groundtruth import read_protocol_views
from glimpse3d_core.io.images import save_png
from glimpse3d_core.metrics import json_safe
from glimpse3d_core.pipeline import run_pipeline
from glimpse3d_core.render import rasterize
from glimpse3d_core.stages import optimize
from glimpse3d_core.types import Gaussians, ViewSet


def build_gsplat(device: torch.device) -> float:
    """Seconds of gsplat's first call (JIT compilation when its extension is not cached)."""
    g = Gaussians(means=torch.zeros(1, 3, device=device), quats=torch.tensor([[1.0, 0, 0, 0]], device=device),
                  log_scales=torch.full((1, 3), -3.0, device=device), opacity_logits=torch.zeros(1, device=device),
                  sh0=torch.zeros(1, 1, 3, device=device))
    viewmat = torch.eye(4, device=device)[None]
    viewmat[0, 2, 3] = 2.0
    K = torch.tensor([[[50.0, 0, 32], [0, 50.0, 32], [0, 0, 1]]], device=device)
    start = time.perf_counter()
    rasterize(g, viewmat, K, 64, 64)
    torch.cuda.synchronize()
    return time.perf_counter() - start


def bare_loop(g0: Gaussians, views: ViewSet, config: optimize.OptimizeConfig, densify: bool, seed: int) -> float:
    """Iterations per second of a minimal gsplat fitting loop (same views, loss and batch as optimize.run)."""
    from gsplat import rasterization
    from gsplat.strategy import DefaultStrategy

    device = g0.means.device
    params = torch.nn.ParameterDict({
        "means": g0.means.clone(), "quats": g0.quats.clone(), "scales": g0.log_scales.clone(),
        "opacities": g0.opacity_logits.clone(), "sh0": g0.sh0.clone(),
    })
    scale = optimize.scene_scale(views.rig)
    lrs = {"means": config.lr_means * scale, "quats": config.lr_quats, "scales": config.lr_scales,
           "opacities": config.lr_opacities, "sh0": config.lr_sh0}
    opts = {k: torch.optim.Adam([params[k]], lr=lr, eps=optimize.ADAM_EPS) for k, lr in lrs.items()}
    strategy = DefaultStrategy(refine_start_iter=config.refine_start_iter, refine_every=config.refine_every,
                               refine_stop_iter=int(config.refine_stop_fraction * config.iterations))
    state = strategy.initialize_state(scene_scale=scale) if densify else None
    viewmats, Ks = views.rig.torch(device)
    rgb = torch.as_tensor(views.rgb, device=device)
    alpha = torch.as_tensor(views.alpha, device=device)
    weights = torch.as_tensor(views.weights, device=device)
    batches = optimize.view_schedule(views.weights, config.views_per_step, config.iterations,
                                     torch.Generator().manual_seed(seed)).to(device)
    bg = torch.full((3,), config.background, device=device)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for step in range(config.iterations):
        idx = batches[step]
        colors, alphas, info = rasterization(
            params["means"], params["quats"], params["scales"].exp(), torch.sigmoid(params["opacities"]),
            params["sh0"], viewmats[idx], Ks[idx], views.rig.width, views.rig.height, sh_degree=0, packed=False)
        a = alphas[..., 0]
        out = colors + (1 - a[..., None]) * bg
        losses = optimize.view_losses(out, a, rgb[idx], alpha[idx], config)
        loss = (losses * weights[idx]).sum() / weights[idx].sum()
        if densify:
            strategy.step_pre_backward(params, opts, state, step, info)
        loss.backward()
        if densify:
            strategy.step_post_backward(params, opts, state, step, info, packed=False)
        for opt in opts.values():
            opt.step()
            opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    return config.iterations / (time.perf_counter() - start)


def speed_input(gt_root: Path, config: PipelineConfig) -> tuple[Gaussians, ViewSet]:
    """(initial Gaussians, target views) of the first object: the pipeline's front stages and multiview."""
    from glimpse3d_core.stages import depth, gaussians_from_mesh, multiview, reconstruct, segment

    gt = read_protocol_views(sorted(p for p in gt_root.iterdir() if p.is_dir())[0])
    seg = segment.run(gt.rgb[0], gt.alpha[0], config.segment, camera_spec=config.input_camera)
    mesh = reconstruct.run(seg.image, depth.run(seg.image, config.depth), seg.camera, config.reconstruct)
    g0 = gaussians_from_mesh.run(mesh, config.gaussians)
    views = multiview.run(g0, seg.image, seg.camera, config.multiview)
    # half precision and no depth keep the file small enough to carry to the GPU machine
    return g0, replace(views, rgb=views.rgb.astype(np.float16), alpha=views.alpha.astype(np.float16), depth=None)


def step_rates(g0: Gaussians, views: ViewSet, config: PipelineConfig, args, report: dict,
               device: torch.device) -> None:
    """Alternate optimize.run and the bare loop (without, then with densification); medians into ``report``."""
    base = config.optimize.model_copy(update={"iterations": args.iterations, "image_size": None})
    rates: dict[str, list[float]] = {"optimize": [], "bare": [], "optimize_densify": [], "bare_densify": [],
                                     "optimize_preset": []}
    for r in range(args.repeats):
        rates["optimize_preset"].append(optimize.run(g0, views, base, seed=r, device=device).iterations_per_second)
        rates["optimize"].append(optimize.run(g0, views, base.model_copy(update={"densify": False, "sh_degree": 0}),
                                              seed=r, device=device).iterations_per_second)
        rates["bare"].append(bare_loop(g0, views, base, densify=False, seed=r))
        rates["optimize_densify"].append(optimize.run(g0, views, base.model_copy(update={"densify": True,
                                                      "sh_degree": 0}), seed=r, device=device).iterations_per_second)
        rates["bare_densify"].append(bare_loop(g0, views, base, densify=True, seed=r))
    speed = {k: float(np.median(v)) for k, v in rates.items()}
    speed["ratio"] = speed["optimize"] / speed["bare"]
    speed["ratio_densify"] = speed["optimize_densify"] / speed["bare_densify"]
    report["step_rate"] = {"median_it_s": speed, "all": rates, "gaussians": len(g0), "views": len(views),
                           "views_per_step": base.views_per_step, "size": views.rig.width}
    print(json.dumps(report["step_rate"], indent=1), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gt", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--preset", default="quality")
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], help="config overrides (dotted=value)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/gpu_pipeline"), help="pipeline outputs (large)")
    parser.add_argument("--cpu-smoke", action="store_true", help="run the quality part on CPU (no step rates)")
    parser.add_argument("--speed-only", type=Path, help="only the step rates, on (initial Gaussians, target views) "
                        "saved by --save-speed-input (skips the pipeline runs)")
    parser.add_argument("--save-speed-input", type=Path, help="run the front stages + multiview of the first "
                        "object on this machine and save their output for --speed-only, then exit")
    args = parser.parse_args()
    if not (torch.cuda.is_available() or args.cpu_smoke):
        sys.exit("gpu_pipeline.py needs CUDA")
    device = torch.device("cpu" if args.cpu_smoke else "cuda")
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {"device": "cpu" if args.cpu_smoke else torch.cuda.get_device_name(0)}
    if not args.cpu_smoke:
        report["gsplat_build_s"] = build_gsplat(device)
        print(f"device {report['device']}; gsplat first call {report['gsplat_build_s']:.1f} s", flush=True)
    config = PipelineConfig.from_dict({"preset": args.preset, "device": device.type, "input_camera": "syncdreamer16",
                                       **parse_assignments(args.overrides)})

    def save() -> None:
        (args.out / "gpu_pipeline.json").write_text(json.dumps(json_safe(report), indent=2, default=float))

    if args.save_speed_input:
        torch.save(speed_input(args.gt, config), args.save_speed_input)
        return
    if args.speed_only:
        g0, views = torch.load(args.speed_only, weights_only=False)
        views = replace(views, rgb=views.rgb.astype(np.float32), alpha=views.alpha.astype(np.float32))
        step_rates(g0.to(device), views, config, args, report, device)
        save()
        return

    quality, first = {}, None
    for k, folder in enumerate(sorted(p for p in args.gt.iterdir() if p.is_dir())):
        gt = read_protocol_views(folder)
        photo = save_png(args.work / "inputs" / f"{folder.name}.png", gt.rgb[0], gt.alpha[0])
        for _ in range(2 if k == 0 else 1):
            start = time.perf_counter()
            result = run_pipeline(photo, args.work / "pipeline", config)
            seconds = time.perf_counter() - start
        shutil.copy(result.files["preview"], args.out / f"{folder.name}_preview.png")
        first = first or result
        final, initial = render_protocol(result.gaussians, 256), render_protocol(result.initial_gaussians, 256)
        quality[folder.name] = {"pipeline": score(final, gt), "initial": score(initial, gt),
                                "copy": score(copy_baseline(gt), gt), "seconds": seconds,
                                "timings": result.timings, "num_gaussians": len(result.gaussians),
                                "optimize_it_s": result.optimize.iterations_per_second}
        print(f"{folder.name}: {seconds:.1f} s/image, optimize {result.optimize.iterations_per_second:.0f} it/s, "
              f"novel PSNR {quality[folder.name]['pipeline']['novel_psnr']:.2f}", flush=True)
        report["quality"] = quality
        save()
    (args.out / "quality_gpu.md").write_text(table(quality, config, report["device"]))
    print(table(quality, config, report["device"]))
    if args.cpu_smoke:
        return

    step_rates(first.initial_gaussians.to(device), first.views, config, args, report, device)
    save()

    ablation = config.with_overrides({"refine": {"depth_consistency": False, "normal_smoothing": False,
                                                 "color_fusion": False}})
    report["no_refine"] = {}
    for folder in sorted(p for p in args.gt.iterdir() if p.is_dir()):
        gt = read_protocol_views(folder)
        result = run_pipeline(args.work / "inputs" / f"{folder.name}.png", args.work / "no_refine", ablation)
        report["no_refine"][folder.name] = score(render_protocol(result.gaussians, 256), gt)
        print(f"no_refine {folder.name}: novel PSNR {report['no_refine'][folder.name]['novel_psnr']:.2f}", flush=True)
        save()


if __name__ == "__main__":
    main()
