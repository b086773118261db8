"""Where SyncDreamer's and SDXL-Lightning's GPU time goes, and what leaves their computation unchanged but is faster.

Full-size models with random weights (the architectures, steps, resolutions and guidance of the released ones; fp16
on CUDA as the backends run them): SyncDreamer built in memory, SDXL-Lightning + depth ControlNet saved once into
``--work`` in the released layout (:func:`gpu_models.save_sdxl`, reused when present) and loaded by the backend.
For each model, side by side in one process, each after a warm-up call:

* SyncDreamer (16 views, 50 DDIM steps, cfg 2): ``eager``, 8 views per UNet call (the default before this script
  measured it); ``batch16``, all 16 views in one call (the default now); ``channels_last``, batch16 with the
  weights in channels-last memory format;
* SDXL-Lightning (the 15 generated views at 1024², strength 0.5 = 2 steps, ControlNet scale 0.7): ``host_io``,
  the views resampled and handed to diffusers as numpy, which normalises them and returns its output on the CPU
  (the fourth round's input and output; its VAE as the backend's); ``batched_vae``, all of it on the GPU with the
  VAE encoding and decoding the whole batch at once (the fifth round's); ``device_io``, the same with the VAE
  taking one view at a time (the backend now); ``channels_last``, device_io with UNet, ControlNet and VAE in
  channels-last memory format;
* ``compiled``: the UNet (SDXL: UNet, ControlNet and VAE) through ``torch.compile`` (inductor, default mode),
  with the compile's own seconds apart (the first call);
* for each, the largest difference of its output from the first variant's (same seed: fp16 kernels differ in
  rounding only), and its peak GPU memory (``torch.cuda.max_memory_allocated`` over the timed calls, the models
  resident included: ``resident_gib``);
* ``--profile``: torch.profiler of one call of the current backend's variant; the top CUDA kernels by total time.

    python research/profile_models.py --work /tmp/g3chain [--only syncdreamer|sdxl] [--profile ROWS] \
        [--compile-mode none] [--out FILE]

Needs CUDA, the ``models`` and ``gpu`` extras (diffusers, transformers) and pytest (the builders reuse test helpers).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpu_models import sample_inputs, save_sdxl

from glimpse3d_core.backends.sdxl_enhance import (
    BACKGROUND,
    SdxlLightningEnhancer,
    SdxlSettings,
    depth_control_images,
)
from glimpse3d_core.imaging import resize
from glimpse3d_core.models.store import ModelStore
from glimpse3d_core.models.syncdreamer import (
    SamplerConfig,
    SyncDreamer,
    SyncDreamerConfig,
    SyncDreamerMultiview,
    SyncDreamerMultiviewConfig,
)
from glimpse3d_core.models.syncdreamer.loader import cast_for_inference


def timed(fn: Callable[[], np.ndarray], repeats: int) -> tuple[float, np.ndarray]:
    """Mean wall seconds of ``repeats`` calls (after the caller's warm-up) and the last output."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats, out


def kernel_table(fn: Callable[[], object], rows: int) -> list[dict]:
    """The ``rows`` CUDA kernels with the most total time in one call of ``fn``."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        fn()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    total = sum(e.self_device_time_total for e in events)
    events.sort(key=lambda e: e.self_device_time_total, reverse=True)
    return [{"kernel": e.key[:90], "ms": round(e.self_device_time_total / 1e3, 1), "calls": e.count,
             "share": round(e.self_device_time_total / total, 3)} for e in events[:rows]]


def compare(label: str, variants: dict[str, Callable[[], np.ndarray]], compiled: set[str], repeats: int,
            profile_rows: int, profiled: str, report: dict) -> None:
    results, reference = {}, None
    for name, fn in variants.items():
        start = time.perf_counter()
        first = fn()  # warm-up: cuDNN autotuning, and the compile for a compiled variant
        torch.cuda.synchronize()
        entry = {"first_call_s": round(time.perf_counter() - start, 1)} if name in compiled else {}
        resident = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        seconds, out = timed(fn, repeats)
        entry["seconds"] = round(seconds, 3)
        entry["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        entry["resident_gib"] = round(resident / 2**30, 2)
        reference = out if reference is None else reference
        entry["max_abs_diff_vs_first"] = float(np.abs(out - reference).max())
        entry["first_equals_repeat"] = bool(np.array_equal(first, out))
        results[name] = entry
        print(label, name, entry, flush=True)
    if profile_rows:
        results[f"{profiled}_kernels"] = kernel_table(variants[profiled], profile_rows)
        for row in results[f"{profiled}_kernels"]:
            print(label, row, flush=True)
    report[label] = results


def channels_last(models: list[torch.nn.Module], run: Callable[[], np.ndarray]) -> Callable[[], np.ndarray]:
    """``run`` with the models' 2-D convolution weights in channels-last memory format (cuDNN then keeps the
    activations channels-last too), restored afterwards."""
    convs = [m for model in models for m in model.modules() if isinstance(m, torch.nn.Conv2d)]

    def variant() -> np.ndarray:
        for conv in convs:
            conv.to(memory_format=torch.channels_last)
        try:
            return run()
        finally:
            for conv in convs:
                conv.to(memory_format=torch.contiguous_format)

    return variant


def syncdreamer_variants(photo, compile_mode: str | None) -> tuple[dict, set[str]]:
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = cast_for_inference(SyncDreamer(SyncDreamerConfig()), "cuda", torch.float16)

    def backend(batch_view_num: int) -> Callable[[], np.ndarray]:
        config = SyncDreamerMultiviewConfig(SamplerConfig(batch_view_num=batch_view_num))
        multiview = SyncDreamerMultiview(model, config)
        return lambda: multiview(photo, 30.0).rgb

    variants = {"eager": backend(8), "batch16": backend(16)}
    variants["channels_last"] = channels_last([model], variants["batch16"])
    if compile_mode is None:
        return variants, set()
    eager_unet = model.model.diffusion_model
    compiled_unet = torch.compile(eager_unet, mode=compile_mode)
    run8 = backend(8)

    def compiled() -> np.ndarray:
        model.model.diffusion_model = compiled_unet
        try:
            return run8()
        finally:
            model.model.diffusion_model = eager_unet

    variants["compiled"] = compiled
    return variants, {"compiled"}


def sdxl_variants(work: Path, photo, views, compile_mode: str | None) -> tuple[dict, set[str]]:
    store = ModelStore(models_dir=work / "models", hf_cache_dir=work / "hf")
    if store.status("sdxl-lightning-4step").status.value != "present":
        save_sdxl(store)
    settings = SdxlSettings()
    enhancer = SdxlLightningEnhancer(settings, store=store, device="cuda")
    pipe = enhancer.pipe

    def host_io() -> np.ndarray:
        """The backend before: numpy in (resampled on the CPU), diffusers' numpy pre- and post-processing."""
        size = (settings.resolution, settings.resolution)
        control = resize(depth_control_images(views.depth[1:]), size)
        images = pipe(prompt=[settings.prompt] * (len(views) - 1), image=resize(views.composite(BACKGROUND)[1:], size),
                      strength=settings.strength, num_inference_steps=settings.steps, guidance_scale=0.0,
                      height=size[0], width=size[1], output_type="np", control_image=control,
                      controlnet_conditioning_scale=settings.controlnet_scale,
                      generator=torch.Generator("cpu").manual_seed(settings.seed)).images
        return np.concatenate([views.rgb[:1], resize(np.asarray(images, np.float32), views.rgb.shape[1:3])])

    def device_io() -> np.ndarray:
        return enhancer.enhance(views, photo).rgb

    def batched_vae() -> np.ndarray:
        """The backend with the VAE encoding and decoding all views of a batch in one call."""
        pipe.vae.disable_slicing()
        try:
            return device_io()
        finally:
            pipe.vae.enable_slicing()

    variants = {"host_io": host_io, "batched_vae": batched_vae, "device_io": device_io,
                "channels_last": channels_last([pipe.unet, pipe.controlnet, pipe.vae], device_io)}
    if compile_mode is None:
        return variants, set()
    eager_parts = {name: getattr(pipe, name) for name in ("unet", "controlnet", "vae")}
    compiled_parts = {name: torch.compile(part, mode=compile_mode) for name, part in eager_parts.items()}

    def compiled() -> np.ndarray:
        for name, part in compiled_parts.items():
            setattr(pipe, name, part)
        try:
            return enhancer.enhance(views, photo).rgb
        finally:
            for name, part in eager_parts.items():
                setattr(pipe, name, part)

    variants["compiled"] = compiled
    return variants, {"compiled"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/g3chain"))
    parser.add_argument("--only", choices=["syncdreamer", "sdxl"], default=None)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--compile-mode", default="default", help="torch.compile mode; 'none' skips compiling")
    parser.add_argument("--profile", type=int, default=0, metavar="ROWS", help="print the top ROWS CUDA kernels")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    mode = None if args.compile_mode == "none" else args.compile_mode
    report: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "command": sys.argv}
    photo, views = sample_inputs()
    if args.only in (None, "syncdreamer"):
        variants, compiled = syncdreamer_variants(photo, mode)
        compare("syncdreamer", variants, compiled, args.repeats, args.profile, "batch16", report)
        variants = None
        torch.cuda.empty_cache()
    if args.only in (None, "sdxl"):
        variants, compiled = sdxl_variants(args.work, photo, views, mode)
        compare("sdxl", variants, compiled, args.repeats, args.profile, "device_io", report)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
