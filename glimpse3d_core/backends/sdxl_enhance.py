"""Enhance backend: SDXL-Lightning img2img (+ optional depth ControlNet) through diffusers.

Assembly, as the SDXL-Lightning model card prescribes: SDXL base's text encoders, tokenizers and UNet *config*,
the distilled 4-step UNet weights (loaded strictly into that config), EulerDiscreteScheduler with
``timestep_spacing="trailing"``, ``guidance_scale=0``. The fp16-fix VAE replaces SDXL's (which overflows in
fp16). Img2img at a configurable ``strength``: diffusers runs the last ``int(steps * strength)`` of the 4 trailing
timesteps 999, 749, 499, 249, so strength 0.25-0.49 runs 1 step (249), 0.5-0.74 runs 2 (499, 249), 0.75-0.99 runs
3 (749, 499, 249) and 1.0 all 4 (from the image noised to timestep 999, almost pure noise); below 0.25 none, which
the settings refuse. Optionally conditioned by the depth ControlNet on the views' rendered depth so the enhanced
views keep their geometry. On tiny random models the backend equals the model card's recipe run directly with
diffusers up to float rounding (4.4e-7 of the largest value, tests/test_released_layouts.py; bit-equal but for the
VAE's slicing). The generated views (all but view 0, the photo) are composited on white, upsampled to
``resolution``, enhanced in batches of ``batch_size`` and resampled back, all on the pipeline's device (diffusers
takes and returns tensors there; through numpy, its pre- and post-processing ran on the CPU: 2.85 against 2.56 s
per image on an H200); rig, alpha, depth and weights are kept. The VAE encodes and decodes one view at a time
(diffusers' slicing): peak memory 36.6 -> 13.0 GiB, weights included, for 3.07 against 2.58 s per image alone
(group norms of one view use the GPU less), which lets six chains share an H200 (research/results/gpu_speed.md).
Alpha is the rendered one, not re-estimated from the new pixels: nothing segments the enhanced views, so where
SDXL moves a silhouette edge (the depth ControlNet is there to keep it) the alpha is off by that much (not measured).

Control image: per view, ``(z_far - z) / (z_far - z_near)`` over pixels with depth > 0 (near = 1, far = 0,
background 0), the normalised inverse-depth look the depth ControlNet was trained on, as RGB.
Device and dtype: the run context's; CUDA (fp16) strongly recommended, CPU (fp32) is only practical for tiny test
models.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from glimpse3d_core.backends.base import Backend, BackendSettings, register
from glimpse3d_core.imaging import resize
from glimpse3d_core.models.loading import (
    cached,
    from_pretrained_strict,
    inference_dtype,
    load_state_dict,
    load_strict,
)
from glimpse3d_core.models.registry import ENHANCE_MODELS, ModelSpec, get_spec
from glimpse3d_core.models.store import ModelStatus, ModelStore
from glimpse3d_core.types import ObjectImage, ViewSet

INPUT_VIEW = 0
"""The photo's index in the ViewSet: never altered."""
BACKGROUND = 1.0
MIN_RESOLUTION = 16


class SdxlSettings(BackendSettings):
    """Enhance backend ``sdxl-lightning``: img2img settings."""

    name: Literal["sdxl-lightning"] = "sdxl-lightning"
    controlnet: str | None = Field("controlnet-depth-sdxl", description="depth ControlNet model id; None: "
                                   "plain img2img")
    prompt: str = Field("a high quality photo of an object on a white background, detailed, sharp",
                        description="text prompt (guidance scale 0, so it conditions without CFG)")
    strength: float = Field(0.5, gt=0.0, le=1.0, description="img2img strength: runs int(steps * strength) "
                            "of the trailing steps")
    steps: int = Field(4, ge=1, description="scheduler steps (the Lightning UNet is distilled for 4)")
    resolution: int = Field(1024, ge=MIN_RESOLUTION, multiple_of=8, description="side the views are enhanced at")
    batch_size: int = Field(16, ge=1, description="views per diffusion call (lower it to fit GPU memory)")
    controlnet_scale: float = Field(0.7, ge=0.0, description="ControlNet conditioning scale")
    seed: int = Field(0, description="noise seed (batch b uses seed + its first view's offset)")

    @property
    def denoising_steps(self) -> int:
        """Steps img2img runs: diffusers' ``int(steps * strength)`` (of 4: 1 at strength 0.25-0.49, 2 at 0.5-0.74,
        3 at 0.75-0.99, 4 at 1)."""
        return min(int(self.steps * self.strength), self.steps)

    @model_validator(mode="after")
    def _runs_a_step(self) -> SdxlSettings:
        if self.denoising_steps < 1:
            raise ValueError(f"strength {self.strength} x {self.steps} steps runs no denoising step "
                             f"(diffusers runs int(steps * strength)); use strength >= {1 / self.steps:g}")
        return self


def load_text_encoders(spec_id: str, base: ModelStatus, dtype: torch.dtype) -> dict[str, Any]:
    """SDXL base's two CLIP text encoders (fp16 variant files) and their tokenizers, strictly."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    root, kw = base.root, {"dtype": dtype, "variant": base.spec.variant}
    return {
        "text_encoder": from_pretrained_strict(spec_id, CLIPTextModel, root / "text_encoder", **kw),
        "text_encoder_2": from_pretrained_strict(spec_id, CLIPTextModelWithProjection, root / "text_encoder_2", **kw),
        "tokenizer": CLIPTokenizer.from_pretrained(root / "tokenizer", local_files_only=True),
        "tokenizer_2": CLIPTokenizer.from_pretrained(root / "tokenizer_2", local_files_only=True),
    }


def load_lightning_unet(base: ModelStatus, lightning: ModelStatus, dtype: torch.dtype) -> torch.nn.Module:
    """SDXL base's UNet architecture (from its config, built on the meta device: no random init of 2.6B
    parameters) with the Lightning weights assigned strictly, cast to ``dtype``."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(base.root / "unet"))
    weights = lightning.path(lightning.spec.files[0].path)
    load_strict(lightning.spec.id, unet, load_state_dict(lightning.spec.id, weights), assign=True)
    return unet.to(dtype)


def load_vae(vae: ModelStatus, dtype: torch.dtype) -> torch.nn.Module:
    from diffusers import AutoencoderKL

    return from_pretrained_strict(vae.spec.id, AutoencoderKL, vae.root, torch_dtype=dtype)


def load_controlnet(controlnet: ModelStatus, dtype: torch.dtype) -> torch.nn.Module:
    from diffusers import ControlNetModel

    return from_pretrained_strict(controlnet.spec.id, ControlNetModel, controlnet.root, torch_dtype=dtype,
                                  variant=controlnet.spec.variant)


def build_pipeline(statuses: dict[str, ModelStatus], controlnet: ModelStatus | None, device: torch.device,
                   dtype: torch.dtype) -> Any:
    """The diffusers img2img pipeline (ControlNet flavour when ``controlnet`` is given) on ``device`` in ``dtype``."""
    from diffusers import (
        EulerDiscreteScheduler,
        StableDiffusionXLControlNetImg2ImgPipeline,
        StableDiffusionXLImg2ImgPipeline,
    )

    base, lightning, vae = (statuses[i] for i in ENHANCE_MODELS)
    scheduler = EulerDiscreteScheduler.from_pretrained(base.root / "scheduler", timestep_spacing="trailing")
    parts = {**load_text_encoders(base.spec.id, base, dtype), "unet": load_lightning_unet(base, lightning, dtype),
             "vae": load_vae(vae, dtype), "scheduler": scheduler}
    if controlnet is not None:
        pipe = StableDiffusionXLControlNetImg2ImgPipeline(
            **parts, controlnet=load_controlnet(controlnet, dtype), add_watermarker=False)
    else:
        pipe = StableDiffusionXLImg2ImgPipeline(**parts, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.vae.enable_slicing()  # one view at a time through the VAE: the same output, a fraction of the memory
    return pipe.to(device)


def depth_control_images(depth: np.ndarray) -> np.ndarray:
    """[C,H,W] camera depth (0 = background) -> [C,H,W,3] control images, near bright (module docstring)."""
    out = np.zeros((*depth.shape, 3), dtype=np.float32)
    for i, z in enumerate(depth):
        valid = z > 0
        if not valid.any():
            continue
        near, far = float(z[valid].min()), float(z[valid].max())
        inverse = (far - z) / max(far - near, float(np.finfo(np.float32).eps))
        out[i] = np.where(valid, np.clip(inverse, 0.0, 1.0), 0.0)[..., None]
    return out


def enhance_models(settings: SdxlSettings) -> tuple[str, ...]:
    """Registry ids the backend needs: SDXL base, the Lightning UNet, the fp16-fix VAE and the ControlNet."""
    return (*ENHANCE_MODELS, *((settings.controlnet,) if settings.controlnet else ()))


class SdxlLightningEnhancer:
    """Enhance backend: ``enhance(views, photo) -> views`` with every generated view passed through SDXL."""

    name = "sdxl-lightning"

    def __init__(self, settings: SdxlSettings | None = None, store: ModelStore | None = None,
                 device: str | torch.device = "cpu", models: dict[str, ModelSpec] | None = None,
                 dtype: torch.dtype | None = None) -> None:
        """``models`` may replace registry specs by id (same ids, other files: the tiny-model tests); ``dtype``
        defaults to :func:`inference_dtype` of the device."""
        self.settings = settings or SdxlSettings()
        store = store or ModelStore()
        ids = enhance_models(self.settings)
        located = store.require(*[(models or {}).get(i) or get_spec(i) for i in ids])
        statuses = dict(zip(ids, located, strict=True))
        cn_status = statuses.get(self.settings.controlnet) if self.settings.controlnet else None
        self.device = torch.device(device)
        dtype = dtype or inference_dtype(self.device)
        key = ("sdxl", *(f"{s.root}/{s.spec.id}" for s in located), str(self.device), dtype)
        self.pipe = cached(key, lambda: build_pipeline(statuses, cn_status, self.device, dtype))
        self.uses_controlnet = cn_status is not None

    def _run(self, rgb: torch.Tensor, control: torch.Tensor | None, seed: int) -> torch.Tensor:
        """[N,3,R,R] views and control images in [0, 1] on the pipeline's device -> [N,3,R,R] enhanced views
        there (diffusers normalises and denormalises tensors as it does numpy images, but on the device)."""
        s = self.settings
        kwargs: dict[str, Any] = {}
        if control is not None:
            kwargs = {"control_image": control, "controlnet_conditioning_scale": s.controlnet_scale}
        result = self.pipe(
            prompt=[s.prompt] * len(rgb), image=rgb, strength=s.strength, num_inference_steps=s.steps,
            guidance_scale=0.0, height=s.resolution, width=s.resolution, output_type="pt",
            generator=torch.Generator("cpu").manual_seed(seed), **kwargs)
        return result.images

    def enhance(self, views: ViewSet, photo: ObjectImage) -> ViewSet:
        s = self.settings
        todo = [i for i in range(len(views)) if i != INPUT_VIEW]
        if not todo:
            return views
        if self.uses_controlnet and views.depth is None:
            raise ValueError("the depth ControlNet needs the views' rendered depth (ViewSet.depth is None)")
        size = (s.resolution, s.resolution)

        def on_device(images: np.ndarray) -> torch.Tensor:
            """[N,H,W,C] numpy -> [N,C,R,R] at the enhance resolution, resampled on the pipeline's device."""
            return resize(torch.from_numpy(images).to(self.device), size).permute(0, 3, 1, 2)

        rgb_in = on_device(views.composite(BACKGROUND)[todo])
        control = on_device(depth_control_images(views.depth[todo])) if self.uses_controlnet else None
        out = views.rgb.copy()
        for start in range(0, len(todo), s.batch_size):
            batch = slice(start, start + s.batch_size)
            enhanced = self._run(rgb_in[batch], None if control is None else control[batch], s.seed + start)
            back = resize(enhanced.float().permute(0, 2, 3, 1), (views.rig.height, views.rig.width))
            out[todo[batch]] = back.cpu().numpy()
        if not np.isfinite(out).all():
            raise FloatingPointError("SDXL produced non-finite pixels (fp16 overflow?)")
        return replace(views, rgb=out.astype(np.float32))


SDXL_LIGHTNING = register(Backend(
    "sdxl-lightning", "enhance", SdxlSettings,
    lambda settings, context: SdxlLightningEnhancer(settings, context.store, context.device,
                                                    dtype=context.dtype).enhance,
    models=enhance_models, description="SDXL-Lightning img2img (+ depth ControlNet) through diffusers",
    gpu_gib=13.0))  # 12.99 GiB peak on an H200, its 8.99 GiB of weights included (research/profile_models.py)
