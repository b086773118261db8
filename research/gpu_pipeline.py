"""The pipeline on CUDA: seconds per image, quality on ground truth, and the optimize stage's step rate next to a
bare gsplat fitting loop on the same views and Gaussian count, measured side by side in one process.

1. gsplat's one-time JIT build is triggered first and timed apart.
2. Every object under --gt (protocol views NNN.png, e.g. research/results/tmp/gt/<name>/ from eval_quality.py):
   view 0 goes through ``run_pipeline`` (preset --preset, input camera syncdreamer16, device cuda); the first
   image is run twice and the second run counted (CUDA kernels of the other stages warm up too). The result is
   scored like research/eval_quality.py (input / novel / 16-view PSNR, SSIM, silhouette IoU) with the baselines.
3. Step rate, on the first object's target views and initial Gaussians, ``--iterations`` steps each, alternated
   ``--repeats`` times (a variant that raises is recorded under ``errors`` and skipped from then on):
   (a) ``optimize.run`` without densification, SH degree 0; (b) the bare loop: ``gsplat.rasterization`` on
   plain parameter tensors with the stage's colours, loss (``optimize.StepLoss``) and Adam (``optimize.FitAdam``),
   nothing else; (c) both with densification; (d) the preset's own optimize config (densify, SH 3);
   (e) ``bare_legacy``, the bare loop as it was before issue 19 (dense 11x11 SSIM, five unfused Adams, SH
   colours), and ``optimize_legacy``, the stage with every issue-19 switch off and that SSIM; (f) one bare-loop
   variant per lever (``levers()``: the stage's defaults with one switch changed, incl. the three torch.compile
   modes). ``setup_s`` is each run's compilation / graph-capture time (the first repeat's compile is cold in this
   process); ``compile_second_process`` compiles the loss again in a fresh process (warm on-disk caches).
4. Ablation: the same objects with MVCRM refinement off (novel-view scores only).

    python3 research/gpu_pipeline.py --gt research/results/tmp/gt --out /tmp/gpu_pipeline [--preset quality]

The step rates alone, with the front stages run on a CPU machine beforehand (the GPU call then only fits), plus
the preset's optimize stage on every object now, as before issue 19 and the other ``FIT_RUNS``, scored on the ground
truth:

    python3 research/gpu_pipeline.py --cpu-smoke --gt GT --out X --save-speed-input speed.pt      # CPU machine
    python3 research/gpu_pipeline.py --out OUT --speed-only speed.pt --fit-quality                # GPU machine
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import get_args

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from eval_quality import copy_baseline, score, table

from glimpse3d_core import imaging
from glimpse3d_core.benchmark import render_like
from glimpse3d_core.chain import Chain
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


def legacy_ssim_per_view(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The optimize stage's SSIM before issue 19 (five dense 11x11 depthwise convolutions), kept to measure the
    speed-up and the quality against it."""
    x, y = a.permute(0, 3, 1, 2), b.permute(0, 3, 1, 2)
    g = _taps(a.device)
    w = (g[:, None] * g[None, :]).expand(3, 1, imaging.SSIM_WINDOW, imaging.SSIM_WINDOW).contiguous()

    def blur(u: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(u, w, groups=3)

    return _ssim_from_moments(blur(x), blur(y), blur(x * x), blur(y * y), blur(x * y))


def _taps(device: torch.device) -> torch.Tensor:
    return imaging.gaussian_taps(imaging.SSIM_WINDOW, imaging.SSIM_SIGMA, device=device)


def stacked_ssim_per_view(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """One 11x11 depthwise convolution over the five stacked moments: the stage's SSIM from the first round of
    issue 19 until the banded-matrix products replaced it."""
    x, y = a.permute(0, 3, 1, 2), b.permute(0, 3, 1, 2)
    taps = _taps(a.device)
    moments = torch.cat([x, y, x * x, y * y, x * y], 1)
    k, n = moments.shape[1], imaging.SSIM_WINDOW
    window = (taps[:, None] * taps[None, :]).expand(k, 1, n, n)
    return _ssim_from_moments(*torch.nn.functional.conv2d(moments, window, groups=k).chunk(5, 1))


def _ssim_from_moments(mx, my, exx, eyy, exy) -> torch.Tensor:
    sxx, syy, sxy = exx - mx**2, eyy - my**2, exy - mx * my
    c1, c2 = imaging.SSIM_K1**2, imaging.SSIM_K2**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1)


SSIMS = {"legacy": legacy_ssim_per_view, "stacked": stacked_ssim_per_view,
         "sepconv": functools.partial(imaging.ssim, blur="separable"),
         "matmul": functools.partial(imaging.ssim, blur="banded")}
"""SSIM implementations (the same function up to rounding); the stage's own, :func:`glimpse3d_core.imaging.ssim`,
is ``matmul`` on CUDA and ``sepconv`` on a CPU."""


@contextmanager
def ssim_variant(name: str):
    """optimize.view_losses with SSIM implementation ``name`` inside the block."""
    current = optimize.ssim
    optimize.ssim = SSIMS[name]
    try:
        yield
    finally:
        optimize.ssim = current


@contextmanager
def cudnn_benchmark():
    """cuDNN's autotuner on inside the block (it picks each convolution's fastest algorithm for its shapes)."""
    current = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = current


def _with(context, fn: Callable, *args):
    """``fn(*args)`` inside ``context``."""
    with context:
        return fn(*args)


LEGACY_STAGE = {"fused_adam": False, "adam_mode": "per_group", "loss_mode": "eager", "rgb_colors": False}
"""The optimize stage's switches as before issue 19 (run it inside ``legacy_loss()``)."""

def levers() -> dict[str, dict]:
    """Bare-loop variants: the stage's defaults with one switch (``adam_mode``, ``loss_mode``, ``rgb_colors``) set to
    each other value it takes, named ``bare_<switch>_<value>`` (the compiled losses last: slowest to set up)."""
    base = optimize.OptimizeConfig()
    out = {f"bare_{name}_{value}": {name: value}
           for name in ("adam_mode", "loss_mode", "rgb_colors")
           for value in (get_args(optimize.OptimizeConfig.model_fields[name].annotation) or (False, True))
           if value != getattr(base, name)}
    return dict(sorted(out.items(), key=lambda item: str(item[1].get("loss_mode", "")).startswith("compile")))


def legacy_loss():
    """The stage's loss as before issue 19 (use with ``LEGACY_STAGE``)."""
    return ssim_variant("legacy")


def bare_loop(g0: Gaussians, views: ViewSet, config: optimize.OptimizeConfig, densify: bool,
              seed: int) -> dict[str, float]:
    """``{"it_s", "setup_s"}`` of a minimal gsplat fitting loop built from the stage's pieces as ``config``
    switches them: plain parameter tensors, ``gsplat.rasterization`` with ``optimize.gsplat_colors`` (SH degree
    0), ``optimize.StepLoss``, ``optimize.FitAdam`` (with its means' decay), gsplat's DefaultStrategy when
    ``densify``; the same views and batches as optimize.run, nothing else."""
    from gsplat import rasterization
    from gsplat.strategy import DefaultStrategy

    device = g0.means.device
    params = torch.nn.ParameterDict({
        "means": g0.means.clone(), "quats": g0.quats.clone(), "scales": g0.log_scales.clone(),
        "opacities": g0.opacity_logits.clone(), "sh0": g0.sh0.clone(),
    })
    scale = optimize.scene_scale(views.rig)
    adam = optimize.FitAdam(params, optimize.learning_rates(config, scale),
                            config.lr_means_final ** (1.0 / max(config.iterations, 1)), config)
    opts = adam.per_parameter()
    strategy = DefaultStrategy(refine_start_iter=config.refine_start_iter, refine_every=config.refine_every,
                               refine_stop_iter=int(config.refine_stop_fraction * config.iterations))
    state = strategy.initialize_state(scene_scale=scale) if densify else None
    viewmats, Ks = views.rig.torch(device)
    batches = optimize.view_schedule(views.weights, config.views_per_step, config.iterations,
                                     torch.Generator().manual_seed(seed)).to(device)
    step_viewmats, step_Ks = viewmats[batches], Ks[batches]
    loss_fn = optimize.StepLoss(torch.as_tensor(views.rgb, device=device), torch.as_tensor(views.alpha, device=device),
                                torch.as_tensor(views.weights, device=device), config, batches.shape[1])
    width, height = views.rig.width, views.rig.height
    torch.cuda.synchronize()
    start = time.perf_counter()
    for step in range(config.iterations):
        colors, sh_degree = optimize.gsplat_colors(params["sh0"], None, 0, config.rgb_colors)
        rgb, alphas, info = rasterization(
            params["means"], params["quats"], params["scales"].exp(), torch.sigmoid(params["opacities"]), colors,
            step_viewmats[step], step_Ks[step], width, height, sh_degree=sh_degree, packed=False)
        loss = loss_fn(rgb, alphas[..., 0], batches[step])
        if densify:
            strategy.step_pre_backward(params, opts, state, step, info)
        loss.backward()
        if densify:
            strategy.step_post_backward(params, opts, state, step, info, packed=False)
        adam.step()
    torch.cuda.synchronize()
    return {"it_s": config.iterations / (time.perf_counter() - start), "setup_s": loss_fn.setup_seconds}


def legacy_bare_loop(g0: Gaussians, views: ViewSet, config: optimize.OptimizeConfig, densify: bool, seed: int,
                     ssim: str = "stacked", fused: bool = True) -> float:
    """Iterations per second of the bare loop as the previous round left it, kept as written: SH-degree-0 colours
    through gsplat's SH kernel, the loss written out per step, one Adam per parameter; with SSIM implementation
    ``ssim`` and fused or foreach Adam. ``ssim="legacy", fused=False`` is the loop before issue 19, the
    ``bare_legacy`` figure every speed-up is measured against."""
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
    opts = {k: torch.optim.Adam([params[k]], lr=lr, eps=optimize.ADAM_EPS, fused=fused)
            for k, lr in lrs.items()}
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
    ssim_fn = SSIMS[ssim]
    torch.cuda.synchronize()
    start = time.perf_counter()
    for step in range(config.iterations):
        idx = batches[step]
        colors, alphas, info = rasterization(
            params["means"], params["quats"], params["scales"].exp(), torch.sigmoid(params["opacities"]),
            params["sh0"], viewmats[idx], Ks[idx], views.rig.width, views.rig.height, sh_degree=0, packed=False)
        a = alphas[..., 0]
        out = colors + (1 - a[..., None]) * bg
        target_alpha = alpha[idx][..., None]
        target = rgb[idx] * target_alpha + config.background * (1 - target_alpha)
        losses = ((1 - config.ssim_lambda) * (out - target).abs().flatten(1).mean(1)
                  + config.ssim_lambda * (1 - ssim_fn(out, target))
                  + config.alpha_lambda * (a - alpha[idx]).abs().flatten(1).mean(1))
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


def full(views: ViewSet) -> ViewSet:
    """Float32 pixels again (saved as float16)."""
    return replace(views, rgb=views.rgb.astype(np.float32), alpha=views.alpha.astype(np.float32))


def speed_inputs(gt_root: Path, config: PipelineConfig) -> list[tuple[str, Gaussians, ViewSet, ViewSet]]:
    """(name, initial Gaussians, target views, ground-truth protocol views) of every object under ``gt_root``: the
    pipeline's stages up to optimize (the chain's backends for ``config``), run on this machine (CPU) so the GPU
    call only fits."""
    def half(v: ViewSet) -> ViewSet:  # half precision, no depth (no Chamfer scores): small enough to carry
        return replace(v, rgb=v.rgb.astype(np.float16), alpha=v.alpha.astype(np.float16), depth=None)

    chain = Chain.prepare(config)
    out = []
    for folder in sorted(p for p in gt_root.iterdir() if p.is_dir()):
        gt = read_protocol_views(folder)
        seg = chain.segment(gt.rgb[0], gt.alpha[0], folder.name)
        g0 = chain.gaussians(chain.reconstruct(seg.image, chain.depth(seg.image), seg.camera))
        views = chain.enhance(chain.multiview(g0, seg.image, seg.camera), seg.image)
        out.append((folder.name, g0.to("cpu"), half(views), half(gt)))
        print(f"speed input {folder.name}: {len(g0)} Gaussians, {len(views)} views", flush=True)
    return out


def _fit_rate(g0: Gaussians, views: ViewSet, config: optimize.OptimizeConfig, device: torch.device,
              ssim: str = "matmul"):
    """A step-rate run of ``optimize.run`` with SSIM implementation ``ssim``: seed -> {"it_s", "setup_s"}."""
    def run(seed: int) -> dict[str, float]:
        with ssim_variant(ssim):
            result = optimize.run(g0, views, config, seed=seed, device=device)
        return {"it_s": result.iterations_per_second, "setup_s": result.setup_seconds}

    return run


def step_rates(g0: Gaussians, views: ViewSet, config: PipelineConfig, args, report: dict, device: torch.device,
               save: Callable[[], None]) -> None:
    """Alternate the stage and the bare loop, now and before issue 19, and the bare loop with each lever changed
    (see the module docstring); medians and every run into ``report["step_rate"]`` (saved after every run),
    errors kept, not raised."""
    base = config.optimize.model_copy(update={"iterations": args.iterations, "image_size": None})
    plain = base.model_copy(update={"densify": False, "sh_degree": 0})
    dense = base.model_copy(update={"densify": True, "sh_degree": 0})
    legacy = plain.model_copy(update=LEGACY_STAGE)
    runs = {
        "bare_legacy": lambda r: {"it_s": legacy_bare_loop(g0, views, base, False, r, ssim="legacy", fused=False)},
        "optimize_legacy": _fit_rate(g0, views, legacy, device, ssim="legacy"),
        "bare": lambda r: bare_loop(g0, views, plain, False, r),
        "optimize": _fit_rate(g0, views, plain, device),
        "bare_densify": lambda r: bare_loop(g0, views, dense, True, r),
        "optimize_densify": _fit_rate(g0, views, dense, device),
        "optimize_preset": _fit_rate(g0, views, base, device),
        **{name: (lambda r, c=plain.model_copy(update=lever): bare_loop(g0, views, c, False, r))
           for name, lever in levers().items()
           if not (args.no_compile and str(lever.get("loss_mode", "")).startswith("compile"))},
    }
    if args.variants:
        runs.update({
            "bare_previous": lambda r: {"it_s": legacy_bare_loop(g0, views, base, False, r)},
            "bare_previous_foreach": lambda r: {"it_s": legacy_bare_loop(g0, views, base, False, r, fused=False)},
            "bare_previous_legacy_fused": lambda r: {"it_s": legacy_bare_loop(g0, views, base, False, r,
                                                                              ssim="legacy")},
            "bare_previous_matmul": lambda r: {"it_s": legacy_bare_loop(g0, views, base, False, r, ssim="matmul")},
            "bare_previous_sepconv": lambda r: {"it_s": legacy_bare_loop(g0, views, base, False, r, ssim="sepconv")},
            **{f"bare_ssim_{name}": (lambda r, n=name: _with(ssim_variant(n), bare_loop, g0, views, plain, False, r))
               for name in SSIMS if name != "matmul"},
            "bare_cudnn_benchmark": lambda r: _with(cudnn_benchmark(), bare_loop, g0, views, plain, False, r),
        })
    meta = {"gaussians": len(g0), "views": len(views), "views_per_step": base.views_per_step,
            "size": views.rig.width, "iterations": args.iterations, "repeats": args.repeats, "torch": torch.__version__}
    # warm-up, not recorded: CUDA, cuDNN and allocator start-up would otherwise land in the first variant
    legacy_bare_loop(g0, views, base.model_copy(update={"iterations": 20}), False, 0, ssim="legacy", fused=False)
    rows: dict[str, list[dict]] = {k: [] for k in runs}
    errors: dict[str, str] = {}
    for r in range(args.repeats):
        for name, fn in runs.items():
            if name in errors:
                continue
            try:
                rows[name].append(fn(r))
                print(f"step rate {name} #{r}: {json.dumps(rows[name][-1])}", flush=True)
            except Exception as exc:  # record it and go on with the other variants
                errors[name] = "".join(traceback.format_exception(exc))[-3000:]
                print(f"step rate {name} failed: {exc!r}", flush=True)
            report["step_rate"] = {**_summary(rows), "errors": errors, **meta}
            save()
    if args.profile:
        report["step_rate"]["profile"] = profile_bare(g0, views, plain)
        print({k: v for k, v in report["step_rate"]["profile"].items() if not k.startswith("by_")}, flush=True)
        print(report["step_rate"]["profile"]["by_host"], report["step_rate"]["profile"]["by_device"], flush=True)
        save()
    if "bare_compile" in report["step_rate"]["median_it_s"]:
        report["step_rate"]["compile_second_process"] = compile_second_process(views, plain)
        save()
    print(json.dumps(report["step_rate"], indent=1), flush=True)


def profile_bare(g0: Gaussians, views: ViewSet, config: optimize.OptimizeConfig, steps: int = 100) -> dict:
    """Where a bare-loop step's time goes: ``steps`` steps under ``torch.profiler`` (CPU and CUDA): wall and summed
    device-kernel milliseconds per step (kernels well under the wall: the loop waits on the host, launches and
    Python), and the top operators by host and by device time."""
    from torch.profiler import ProfilerActivity, profile

    cfg = config.model_copy(update={"iterations": steps})
    bare_loop(g0, views, cfg, False, 0)  # warm
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        bare_loop(g0, views, cfg, False, 0)
        wall = time.perf_counter() - start
    events = prof.key_averages()
    kernel_us = sum(e.self_device_time_total for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
    return {"steps": steps, "wall_ms_per_step": 1e3 * wall / steps, "kernel_ms_per_step": kernel_us / 1e3 / steps,
            "launches_per_step": sum(e.count for e in events if e.key.startswith("cudaLaunchKernel")) / steps,
            "by_host": events.table(sort_by="self_cpu_time_total", row_limit=25),
            "by_device": events.table(sort_by="self_device_time_total", row_limit=20)}


def _summary(rows: dict[str, list[dict]]) -> dict:
    """The median it/s of each variant and the ratios, setup seconds and every run's it/s."""
    speed = {k: float(np.median([row["it_s"] for row in v])) for k, v in rows.items() if v}

    def ratio(a: str, b: str) -> float | None:
        return speed[a] / speed[b] if a in speed and b in speed else None

    speed.update(ratio=ratio("optimize", "bare"), ratio_densify=ratio("optimize_densify", "bare_densify"),
                 bare_speedup_vs_legacy=ratio("bare", "bare_legacy"),
                 optimize_speedup_vs_legacy=ratio("optimize", "optimize_legacy"))
    return {"median_it_s": speed, "setup_s": {k: [row.get("setup_s") for row in v] for k, v in rows.items() if v},
            "all": {k: [row["it_s"] for row in v] for k, v in rows.items()}}


def compile_second_process(views: ViewSet, config: optimize.OptimizeConfig) -> dict:
    """Setup seconds of the compiled loss (``compile`` mode) in a fresh process after this one compiled it, i.e.
    with inductor's on-disk caches warm; and that process's whole wall time (imports, CUDA start)."""
    shape = f"{min(config.views_per_step, len(views))},{views.rig.height},{views.rig.width}"
    start = time.perf_counter()
    try:
        out = subprocess.run([sys.executable, __file__, "--compile-probe", shape], capture_output=True, text=True,
                             timeout=300, check=True)
        return {**json.loads(out.stdout.strip().splitlines()[-1]), "process_wall_s": time.perf_counter() - start}
    except Exception as exc:  # a report, not a failure
        return {"error": repr(exc)[-2000:]}


def compile_probe(shape: str) -> None:
    """Print ``{"setup_s": ...}``: a compiled StepLoss on random targets of ``shape`` (V,H,W), built here."""
    views, height, width = (int(x) for x in shape.split(","))
    device = torch.device("cuda")
    g = torch.Generator(device=device).manual_seed(0)
    rgb = torch.rand(16, height, width, 3, device=device, generator=g)
    alpha = torch.rand(16, height, width, device=device, generator=g)
    loss = optimize.StepLoss(rgb, alpha, torch.ones(16, device=device),
                             optimize.OptimizeConfig(loss_mode="compile"), views)
    print(json.dumps({"setup_s": loss.setup_seconds}))


FIT_RUNS = {"legacy": LEGACY_STAGE, "now": {}, "now_again": {}, "now_sh_colors": {"rgb_colors": False}}
"""fit_quality's runs: the stage before issue 19, now, now once more (the run-to-run spread: gsplat's backward
accumulates with atomics), and now with gsplat's SH kernel for the colours."""


def fit_quality(objects: list, config: PipelineConfig, report: dict, device: torch.device,
                save: Callable[[], None]) -> None:
    """The preset's optimize stage alone on every object, once per ``FIT_RUNS`` entry (the legacy one with the
    legacy loss), scored on the ground truth (refine skipped: it is the same code after either fit)."""
    out: dict = {}
    for name, g0, views, gt in objects:
        row = {}
        for label, update in FIT_RUNS.items():
            with legacy_loss() if label == "legacy" else nullcontext():
                fitted = optimize.run(g0, views, config.optimize.model_copy(update=update), seed=config.seed,
                                      device=device)
            row[label] = {**score(render_like(fitted.gaussians, gt), gt), "it_s": fitted.iterations_per_second,
                          "setup_s": fitted.setup_seconds, "num_gaussians": fitted.num_final}
        for label in FIT_RUNS:
            if label != "legacy":
                for metric in ("novel_psnr", "input_psnr"):
                    row[f"delta_{metric}_{label}"] = row[label][metric] - row["legacy"][metric]
        out[name] = row
        report["fit_quality"] = out
        save()
        print(f"fit quality {name}: " + "; ".join(
            f"{label} novel {r['novel_psnr']:.3f} input {r['input_psnr']:.3f} dB {r['it_s']:.0f} it/s"
            for label, r in ((k, row[k]) for k in FIT_RUNS)), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gt", type=Path, help="ground-truth protocol views, a folder per object (not with "
                        "--speed-only)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--preset", default="quality")
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], help="config overrides (dotted=value)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/gpu_pipeline"), help="pipeline outputs (large)")
    parser.add_argument("--cpu-smoke", action="store_true", help="run the quality part on CPU (no step rates)")
    parser.add_argument("--speed-only", type=Path, help="only the step rates, on (initial Gaussians, target views) "
                        "saved by --save-speed-input (skips the pipeline runs)")
    parser.add_argument("--profile", action="store_true", help="also profile 100 bare-loop steps (torch.profiler)")
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile levers (a minute "
                        "or more of compilation each)")
    parser.add_argument("--variants", action="store_true", help="also the bare loop with the other SSIM "
                        "implementations (the previous round's loop, and today's defaults: bare_ssim_<name>) and with "
                        "cuDNN's autotuner on")
    parser.add_argument("--fit-quality", action="store_true", help="with --speed-only: the preset's optimize stage "
                        "on every saved object, now, as before issue 19 and the other FIT_RUNS, on the ground truth")
    parser.add_argument("--save-speed-input", type=Path, help="run the stages before optimize on every object on "
                        "this machine and save their output for --speed-only, then exit")
    parser.add_argument("--compile-probe", metavar="V,H,W", help=argparse.SUPPRESS)  # compile_second_process
    args = parser.parse_args()
    if args.compile_probe:
        compile_probe(args.compile_probe)
        return
    if args.out is None or (args.gt is None and not args.speed_only):
        parser.error("--out is needed, and --gt unless --speed-only")
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
        torch.save(speed_inputs(args.gt, config), args.save_speed_input)
        return
    if args.speed_only:
        objects = [(name, g0.to(device), full(views), full(gt))
                   for name, g0, views, gt in torch.load(args.speed_only, weights_only=False)]
        step_rates(objects[0][1], objects[0][2], config, args, report, device, save)
        if args.fit_quality:
            fit_quality(objects, config, report, device, save)
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
        final, initial = render_like(result.gaussians, gt), render_like(result.initial_gaussians, gt)
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

    step_rates(first.initial_gaussians.to(device), first.views, config, args, report, device, save)

    ablation = config.with_overrides({"refine": {"depth_consistency": False, "normal_smoothing": False,
                                                 "color_fusion": False}})
    report["no_refine"] = {}
    for folder in sorted(p for p in args.gt.iterdir() if p.is_dir()):
        gt = read_protocol_views(folder)
        result = run_pipeline(args.work / "inputs" / f"{folder.name}.png", args.work / "no_refine", ablation)
        report["no_refine"][folder.name] = score(render_like(result.gaussians, gt), gt)
        print(f"no_refine {folder.name}: novel PSNR {report['no_refine'][folder.name]['novel_psnr']:.2f}", flush=True)
        save()


if __name__ == "__main__":
    main()
