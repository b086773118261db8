"""Full-size models with random weights in the released layouts, and the time and peak GPU memory of the
library-backed model backends built from them.

Builders (used by research/gpu_triposr.py, gpu_syncdreamer.py and bench_learned_chain.py too): each builds a
full-size architecture with random weights, initialised on ``device`` (the GPU: no slow CPU initialisation of
billions of values), and saves it in the exact layout and file names of the real download (so the registry's own
specs, sizes included, are checked against them): DPT-Large / DPT-Hybrid, SDXL text encoders + UNet + VAE + depth
ControlNet and CLIP ViT-B/32 from their released configs
(:data:`~glimpse3d_core.models.library_layouts.RELEASED_FILES`), TripoSR, SyncDreamer and rembg's U²-Net (an ONNX
graph of :class:`U2Net`). The SDXL tokenizers are byte-level stand-ins (real vocabularies are not available
offline); prompt length is capped at 77 tokens as for the real ones. Weights are random: the outputs are
meaningless, the time and memory are those of the real models.

``main`` runs DPT-Large, CLIP and SDXL-Lightning (+ ControlNet) through the same backend code users run (store
lookup -> strict loading -> backend call).

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
import yaml

from glimpse3d_core.cameras import syncdreamer16_rig
from glimpse3d_core.models.library_layouts import RELEASED_FILES
from glimpse3d_core.models.loading import clear_cache
from glimpse3d_core.models.registry import MODELS
from glimpse3d_core.models.store import ModelStore
from glimpse3d_core.models.syncdreamer import SyncDreamer, SyncDreamerConfig
from glimpse3d_core.models.triposr import TripoSR, TripoSRConfig
from glimpse3d_core.types import ObjectImage, ViewSet

U2NET_INPUT = 320
"""rembg's U²-Net input side (px)."""


def build(name: str, device: torch.device | str) -> torch.nn.Module:
    """The released architecture ``name`` (a key of :data:`RELEASED_FILES`) with random weights on ``device``."""
    return RELEASED_FILES[name].build(device=device)


def save_sdxl(store: ModelStore, device: torch.device | str = "cuda") -> None:
    """SDXL base's text encoders (fp16), byte-level tokenizers, scheduler and UNet config; the Lightning UNet file
    (fp16), the fp16-fix VAE and the depth ControlNet (fp16)."""
    from diffusers import EulerDiscreteScheduler
    from safetensors.torch import save_file

    from tests.test_backends import write_tiny_tokenizer

    base = store.model_dir(MODELS["sdxl-base"])
    build("sdxl-base.text_encoder", device).half().save_pretrained(base / "text_encoder", variant="fp16")
    build("sdxl-base.text_encoder_2", device).half().save_pretrained(base / "text_encoder_2", variant="fp16")
    for sub in ("tokenizer", "tokenizer_2"):
        write_tiny_tokenizer(base / sub, max_length=77)
    EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                           timestep_spacing="leading").save_pretrained(base / "scheduler")
    unet = build("sdxl-lightning-4step", device).half()
    unet.save_config(base / "unet")
    lightning = store.model_dir(MODELS["sdxl-lightning-4step"])
    lightning.mkdir(parents=True, exist_ok=True)
    save_file(unet.state_dict(), lightning / "sdxl_lightning_4step_unet.safetensors")
    del unet
    build("controlnet-depth-sdxl", device).half().save_pretrained(
        store.model_dir(MODELS["controlnet-depth-sdxl"]), variant="fp16")
    build("sdxl-vae-fp16-fix", device).save_pretrained(store.model_dir(MODELS["sdxl-vae-fp16-fix"]))
    empty_cache(device)


def save_dpt(store: ModelStore, model_id: str, device: torch.device | str = "cuda") -> None:
    """DPT-Large or DPT-Hybrid (``model_id``: ``dpt-large`` / ``dpt-hybrid-midas``) with a 384 px image
    processor."""
    from transformers import DPTImageProcessor

    folder = store.model_dir(MODELS[model_id])
    build(model_id, device).save_pretrained(folder)
    DPTImageProcessor(size={"height": 384, "width": 384}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(
        folder)
    empty_cache(device)


def save_clip(store: ModelStore, device: torch.device | str = "cuda") -> None:
    """CLIP ViT-B/32 with its image processor."""
    from transformers import CLIPImageProcessor

    folder = store.model_dir(MODELS["clip-vit-base-patch32"])
    build("clip-vit-base-patch32", device).save_pretrained(folder)
    CLIPImageProcessor().save_pretrained(folder)
    empty_cache(device)


def save_full_size(store: ModelStore) -> None:
    """The library models ``main`` measures: SDXL (+ ControlNet), DPT-Large and CLIP, built on the GPU."""
    save_sdxl(store)
    save_dpt(store, "dpt-large")
    save_clip(store)


def save_triposr(folder: Path, config: TripoSRConfig, device: torch.device | str = "cuda") -> dict[str, torch.Tensor]:
    """``config.yaml`` + ``model.ckpt`` (float32 state dict under the released key names) in ``folder``; returns
    the saved state dict (on the CPU)."""
    torch.manual_seed(0)
    with torch.device(device):
        source = TripoSR(config)
    state = {k: v.cpu() for k, v in source.checkpoint_state_dict().items()}
    del source
    empty_cache(device)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config.to_yaml_dict()))
    torch.save(state, folder / "model.ckpt")
    return state


def save_syncdreamer(path: Path, config: SyncDreamerConfig, device: torch.device | str = "cuda") -> None:
    """A Lightning-style ``{"state_dict": ...}`` float32 checkpoint of ``config``'s architecture (the released one:
    5.57 GB) with its default random initialisation."""
    torch.manual_seed(0)
    with torch.device(device):
        model = SyncDreamer(config)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    del model
    empty_cache(device)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state}, path)


class ConvBnRelu(torch.nn.Sequential):
    """3x3 convolution (dilated by ``dilation``, same size) + batch norm + ReLU: U²-Net's basic layer."""

    def __init__(self, cin: int, cout: int, dilation: int = 1) -> None:
        super().__init__(torch.nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation),
                         torch.nn.BatchNorm2d(cout), torch.nn.ReLU(inplace=True))


def _upsample_like(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.interpolate(x, size=ref.shape[2:], mode="bilinear", align_corners=False)


def _pool(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.max_pool2d(x, 2, 2, ceil_mode=True)


class ResidualU(torch.nn.Module):
    """U²-Net's residual U-block of ``height`` (RSU-L): an input layer, then an encoder of ``height`` layers (pooled
    between all but the last, which is dilated 2) and a decoder over the skip connections, plus the input layer's
    output. ``dilated`` is the RSU-4F variant: no pooling, dilations 1, 2, 4, 8 instead."""

    def __init__(self, height: int, cin: int, mid: int, cout: int, dilated: bool = False) -> None:
        super().__init__()
        self.dilated = dilated
        rates = [2**i for i in range(height)] if dilated else [1] * (height - 1) + [2]
        self.inp = ConvBnRelu(cin, cout)
        self.enc = torch.nn.ModuleList([ConvBnRelu(cout, mid, rates[0])]
                                       + [ConvBnRelu(mid, mid, rates[i]) for i in range(1, height)])
        self.dec = torch.nn.ModuleList([ConvBnRelu(2 * mid, mid, rates[i]) for i in range(height - 2, 0, -1)]
                                       + [ConvBnRelu(2 * mid, cout, rates[0])])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top = self.inp(x)
        skips, h = [], top
        for i, layer in enumerate(self.enc):
            if 0 < i < len(self.enc) - 1 and not self.dilated:
                h = _pool(h)
            h = layer(h)
            skips.append(h)
        h = skips.pop()
        for layer in self.dec:
            skip = skips.pop()
            h = layer(torch.cat([h if self.dilated else _upsample_like(h, skip), skip], 1))
        return h + top


class U2Net(torch.nn.Module):
    """U²-Net (Qin et al. 2020, the full 44.0M-parameter model rembg's ``u2net.onnx`` holds), written from the
    paper's description; ``width_divisor`` narrows every layer (tiny test sizes). Input [B,3,H,W] -> seven sigmoid
    maps [B,1,H,W], the fused one first (what rembg reads)."""

    # (height, input, middle, output channels, dilated) of the six encoder and five decoder stages.
    ENCODER = ((7, 3, 32, 64, False), (6, 64, 32, 128, False), (5, 128, 64, 256, False), (4, 256, 128, 512, False),
               (4, 512, 256, 512, True), (4, 512, 256, 512, True))
    DECODER = ((4, 1024, 256, 512, True), (4, 1024, 128, 256, False), (5, 512, 64, 128, False),
               (6, 256, 32, 64, False), (7, 128, 16, 64, False))
    SIDES = (64, 64, 128, 256, 512, 512)
    """Channels of the maps the side outputs read: decoder stages 1..5 from the top, then the deepest encoder."""

    def __init__(self, width_divisor: int = 1) -> None:
        super().__init__()

        def c(n: int) -> int:
            return n if n == 3 else max(n // width_divisor, 1)

        self.enc = torch.nn.ModuleList(ResidualU(h, c(i), c(m), c(o), d) for h, i, m, o, d in self.ENCODER)
        self.dec = torch.nn.ModuleList(ResidualU(h, c(i), c(m), c(o), d) for h, i, m, o, d in self.DECODER)
        self.sides = torch.nn.ModuleList(torch.nn.Conv2d(c(n), 1, 3, padding=1) for n in self.SIDES)
        self.fuse = torch.nn.Conv2d(len(self.SIDES), 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        skips, h = [], x
        for i, stage in enumerate(self.enc):
            h = stage(_pool(h) if i else h)
            skips.append(h)
        maps = [skips.pop()]
        for stage in self.dec:
            skip = skips.pop()
            maps.append(stage(torch.cat([_upsample_like(maps[-1], skip), skip], 1)))
        sides = [_upsample_like(side(m), x) for side, m in zip(self.sides, reversed(maps), strict=True)]
        return tuple(torch.sigmoid(t) for t in (self.fuse(torch.cat(sides, 1)), *sides))


def save_u2net(path: Path, width_divisor: int = 1) -> None:
    """:class:`U2Net` with random weights exported (CPU, eval mode) as the ONNX graph rembg's u2net session runs:
    one input [1,3,320,320], the fused map first among seven outputs."""
    import warnings

    torch.manual_seed(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notices
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(U2Net(width_divisor).eval(), (torch.zeros(1, 3, U2NET_INPUT, U2NET_INPUT),), str(path),
                          dynamo=False, input_names=["input.1"], output_names=[f"d{i}" for i in range(7)])


def empty_cache(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
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
