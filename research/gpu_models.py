"""Time and peak GPU memory of the library-backed model backends at full size, with random weights.

Builds the full-size architectures (DPT-Large, SDXL text encoders + UNet + VAE + depth ControlNet, CLIP ViT-B/32)
from their released configs with random weights, saves them in the exact layout and file names of the real
downloads (so the registry's own specs, sizes included, are checked against them), then runs them through the same
backend code users run
(store lookup -> strict loading -> backend call). Weights are random: the outputs are meaningless, the
time and memory are those of the real models. The SDXL tokenizers are byte-level stand-ins (real vocabularies
are not available offline); prompt length is capped at 77 tokens as for the real ones.

Usage (CUDA machine): ``python research/gpu_models.py [--work /tmp/g3models] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from glimpse3d_core.cameras import syncdreamer16_rig
from glimpse3d_core.models.library_layouts import RELEASED_FILES
from glimpse3d_core.models.loading import clear_cache
from glimpse3d_core.models.registry import MODELS
from glimpse3d_core.models.store import ModelStore
from glimpse3d_core.types import ObjectImage, ViewSet


def save_full_size(store: ModelStore) -> None:
    """Random full-size models in the real layouts (fp16 where the real files are fp16), built from the released
    configs (:mod:`glimpse3d_core.models.library_layouts`)."""
    from diffusers import EulerDiscreteScheduler
    from safetensors.torch import save_file
    from transformers import CLIPImageProcessor, DPTImageProcessor

    from tests.test_backends import write_tiny_tokenizer

    def build(name: str) -> torch.nn.Module:
        return RELEASED_FILES[name].build(device="cuda")

    base = store.model_dir(MODELS["sdxl-base"])
    build("sdxl-base.text_encoder").half().save_pretrained(base / "text_encoder", variant="fp16")
    build("sdxl-base.text_encoder_2").half().save_pretrained(base / "text_encoder_2", variant="fp16")
    for sub in ("tokenizer", "tokenizer_2"):
        write_tiny_tokenizer(base / sub, max_length=77)
    EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                           timestep_spacing="leading").save_pretrained(base / "scheduler")
    unet = build("sdxl-lightning-4step").half()
    unet.save_config(base / "unet")
    lightning = store.model_dir(MODELS["sdxl-lightning-4step"])
    lightning.mkdir(parents=True, exist_ok=True)
    save_file(unet.state_dict(), lightning / "sdxl_lightning_4step_unet.safetensors")
    del unet
    build("controlnet-depth-sdxl").half().save_pretrained(
        store.model_dir(MODELS["controlnet-depth-sdxl"]), variant="fp16")
    build("sdxl-vae-fp16-fix").save_pretrained(store.model_dir(MODELS["sdxl-vae-fp16-fix"]))
    dpt = store.model_dir(MODELS["dpt-large"])
    build("dpt-large").save_pretrained(dpt)
    DPTImageProcessor(size={"height": 384, "width": 384}, image_mean=[0.5] * 3,
                      image_std=[0.5] * 3).save_pretrained(dpt)
    clip = store.model_dir(MODELS["clip-vit-base-patch32"])
    build("clip-vit-base-patch32").save_pretrained(clip)
    CLIPImageProcessor().save_pretrained(clip)
    torch.cuda.empty_cache()


def measure(label: str, fn: Callable[[], object], repeats: int, results: dict) -> None:
    """Warm-up once, then ``repeats`` timed calls; records mean seconds and peak GPU memory."""
    try:
        fn()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / repeats
        peak = torch.cuda.max_memory_allocated() / 2**30
        results[label] = {"seconds": round(seconds, 3), "peak_gib": round(peak, 2)}
    except torch.cuda.OutOfMemoryError as exc:
        results[label] = {"error": f"out of memory: {str(exc)[:120]}"}
    print(label, results[label], flush=True)


def sample_inputs(views: int = 16, size: int = 256) -> tuple[ObjectImage, ViewSet]:
    yy, xx = np.mgrid[0:512, 0:512] / 512.0
    alpha = (((yy - 0.5) ** 2 + (xx - 0.5) ** 2) < 0.12).astype(np.float32)
    photo = ObjectImage(np.stack([xx, yy, 1 - xx], -1).astype(np.float32), alpha, "disc")
    small = torch.nn.functional.interpolate(torch.from_numpy(alpha)[None, None], size=(size, size))[0, 0].numpy()
    rgb = np.repeat(np.stack([np.full((size, size), 0.6)] * 3, -1)[None], views, 0).astype(np.float32)
    depth = np.repeat((small * 1.5)[None], views, 0).astype(np.float32)
    return photo, ViewSet(syncdreamer16_rig(size), rgb, np.repeat(small[None], views, 0), depth)


def main() -> None:
    from glimpse3d_core.backends.clip_similarity import ClipSimilarity
    from glimpse3d_core.backends.dpt_depth import DptDepth
    from glimpse3d_core.backends.sdxl_enhance import SdxlLightningEnhancer, SdxlSettings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/g3models"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    store = ModelStore(models_dir=args.work / "models", hf_cache_dir=args.work / "hf")
    t0 = time.perf_counter()
    save_full_size(store)
    results: dict = {"device": torch.cuda.get_device_name(), "build_and_save_s": round(time.perf_counter() - t0, 1)}
    results["registry_size_check"] = {
        i: store.status(i).status.value for i in ("sdxl-base", "sdxl-lightning-4step", "sdxl-vae-fp16-fix",
                                                  "controlnet-depth-sdxl", "dpt-large", "clip-vit-base-patch32")}
    print(results, flush=True)
    photo, views = sample_inputs()

    t0 = time.perf_counter()
    depth = DptDepth("dpt-large", store)
    results["dpt_load_s"] = round(time.perf_counter() - t0, 1)
    measure("dpt-large depth, 1 image 512px", lambda: depth(photo), args.repeats, results)
    clip = ClipSimilarity("clip-vit-base-patch32", store)
    measure("clip-vit-base-patch32 similarity, photo vs 16 views", lambda: clip(photo.composite(), views.composite()),
            args.repeats, results)
    depth = clip = None  # release before SDXL
    clear_cache()

    for controlnet in ("controlnet-depth-sdxl", None):
        torch.cuda.empty_cache()
        t0 = time.perf_counter()
        enhancer = SdxlLightningEnhancer(SdxlSettings(controlnet=controlnet), store=store)
        results[f"sdxl_load_s (controlnet={controlnet})"] = round(time.perf_counter() - t0, 1)
        for resolution, strength in ((1024, 0.5), (1024, 1.0), (768, 0.5), (512, 0.5)):
            if controlnet is None and resolution != 1024:
                continue
            enhancer.settings = SdxlSettings(controlnet=controlnet, resolution=resolution, strength=strength,
                                             batch_size=16)
            label = (f"sdxl-lightning enhance 15 views @{resolution}px strength {strength} "
                     f"({int(4 * strength)} UNet steps), controlnet={controlnet}")
            measure(label, lambda e=enhancer: e.enhance(views, photo), args.repeats, results)
        enhancer = None
        clear_cache()
    print(json.dumps(results, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
