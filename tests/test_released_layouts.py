"""Released layouts of library models load through the library's own loader with an explicit list of keys
allowed to be missing (glimpse3d_core/models/released.py); the DPT, CLIP and SDXL-Lightning backends equal their
libraries' own recipes.

Intel's released dpt-large checkpoint leaves out ``neck.fusion_stage.layers.0.residual_layer1.*``, which
transformers' DPT still defines but never calls (huggingface/transformers issue #28292); both DPT models may lack
it. A tiny DPT saved without it must load, and give the same output as with the weights present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from glimpse3d_core.models.errors import CorruptWeightsError
from glimpse3d_core.models.loading import clear_cache
from glimpse3d_core.models.registry import get_spec
from glimpse3d_core.models.released import split_missing
from glimpse3d_core.models.store import ModelStore
from glimpse3d_core.types import ObjectImage
from tests.test_backends import save_tiny_dpt

OMITTED = "neck.fusion_stage.layers.0.residual_layer1."


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


def _released_dpt(folder: Path, drop_prefixes: tuple[str, ...] = (OMITTED,)) -> list[str]:
    """A tiny DPT saved as the released files are: without the keys under ``drop_prefixes``; returns them."""
    save_tiny_dpt(folder)
    weights = folder / "model.safetensors"
    state = load_file(str(weights))
    dropped = sorted(k for k in state if k.startswith(drop_prefixes))
    save_file({k: v for k, v in state.items() if k not in dropped}, str(weights), metadata={"format": "pt"})
    return dropped


def test_allowed_missing_keys_are_per_model_with_reasons() -> None:
    keys = [OMITTED + "convolution1.weight", "head.head.0.weight"]
    unexplained, allowed = split_missing("dpt-large", keys)
    assert unexplained == ["head.head.0.weight"]
    assert list(allowed) == [OMITTED + "convolution1.weight"] and "#28292" in allowed[keys[0]]
    assert split_missing("clip-vit-base-patch32", keys) == (sorted(keys), {})


@pytest.mark.parametrize("model_id", ["dpt-large", "dpt-hybrid-midas"])
def test_released_dpt_layout_loads_and_the_omitted_weights_are_unused(tmp_path, model_id) -> None:
    from glimpse3d_core.backends.dpt_depth import load_dpt

    full = tmp_path / "full"
    save_tiny_dpt(full)
    released = tmp_path / "released"
    assert len(_released_dpt(released)) == 4  # two convolutions, weight and bias
    spec = get_spec(model_id)
    model, _ = load_dpt(spec, str(released), torch.device("cpu"))
    reference, _ = load_dpt(spec, str(full), torch.device("cpu"))
    pixels = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values=pixels).predicted_depth,
                                   reference(pixel_values=pixels).predicted_depth, rtol=0, atol=0)


def test_any_other_missing_key_is_an_error_naming_it(tmp_path) -> None:
    from glimpse3d_core.backends.dpt_depth import load_dpt

    dropped = _released_dpt(tmp_path, (OMITTED, "head.head.0."))
    assert "head.head.0.weight" in dropped
    with pytest.raises(CorruptWeightsError, match=r"2 missing \(head\.head\.0\.bias, head\.head\.0\.weight\)"):
        load_dpt(get_spec("dpt-large"), str(tmp_path), torch.device("cpu"))
    with pytest.raises(CorruptWeightsError, match="residual_layer1"):  # allowed for DPT only
        load_dpt(get_spec("clip-vit-base-patch32"), str(tmp_path), torch.device("cpu"))


def test_dpt_backend_equals_the_transformers_depth_estimation_pipeline(tmp_path) -> None:
    """Same tiny model, same photo (opaque, so compositing is a no-op): our raw disparity equals the pipeline's
    ``predicted_depth`` resized to the photo (its own post-processing). Orientation: MiDaS/DPT output is relative
    inverse depth, larger = nearer; the backend's DepthMap flips it (larger = farther)."""
    from transformers import pipeline

    from glimpse3d_core.backends.dpt_depth import DptDepth
    from tests.test_backends import hf_snapshot, tiny_spec

    store = ModelStore(models_dir=tmp_path / "models", hf_cache_dir=tmp_path / "hf")
    real = get_spec("dpt-hybrid-midas")
    snap = hf_snapshot(store, real.repo)
    _released_dpt(snap)
    backend = DptDepth(tiny_spec(real, snap), store, device="cpu")
    rgb8 = np.random.default_rng(0).integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    image = ObjectImage(rgb8.astype(np.float32) / 255.0, np.ones((48, 64), np.float32), "opaque")
    ours = backend.disparity(image)
    reference = pipeline("depth-estimation", model=backend.model, image_processor=backend.processor,
                         device="cpu")(Image.fromarray(rgb8))["predicted_depth"]
    reference = np.asarray(reference, dtype=np.float64).squeeze()
    error = np.abs(ours - reference).max() / np.abs(reference).max()
    print(f"dpt vs transformers depth-estimation pipeline: max abs error / max = {error:.2e}")
    assert ours.shape == reference.shape == (48, 64)
    assert error <= 1e-4


def test_clip_similarity_is_the_cosine_of_clips_own_normalised_embeddings(tmp_path) -> None:
    """Same tiny CLIP: our per-view similarity equals the cosine of L2-normalised ``get_image_features`` of
    images prepared by CLIP's own image processor from 8-bit PIL images (its usual input; ours gets the same
    pixels as floats in [0, 1])."""
    from transformers import CLIPImageProcessor, CLIPModel

    from glimpse3d_core.backends.clip_similarity import ClipSimilarity
    from tests.test_backends import save_tiny_clip, tiny_spec

    store = ModelStore(models_dir=tmp_path / "models", hf_cache_dir=tmp_path / "hf")
    real = get_spec("clip-vit-base-patch32")
    folder = store.model_dir(real)
    save_tiny_clip(folder)
    ours = ClipSimilarity(tiny_spec(real, folder), store, device="cpu")
    rng = np.random.default_rng(1)
    images8 = rng.integers(0, 256, size=(3, 40, 56, 3), dtype=np.uint8)
    sims = ours.per_view(images8[0] / 255.0, images8[1:] / 255.0)

    model, processor = CLIPModel.from_pretrained(folder), CLIPImageProcessor.from_pretrained(folder)
    with torch.no_grad():
        pixels = processor(images=[Image.fromarray(i) for i in images8], return_tensors="pt")["pixel_values"]
        features = model.get_image_features(pixel_values=pixels)
    features = getattr(features, "pooler_output", features)
    unit = torch.nn.functional.normalize(features.double(), dim=-1)
    reference = (unit[1:] @ unit[0]).numpy()
    error = np.abs(sims - reference).max()
    print(f"clip similarity vs CLIP's own recipe: max abs error {error:.2e} (cosines {np.round(reference, 4)})")
    assert error <= 1e-4


def test_sdxl_img2img_steps_per_strength() -> None:
    """diffusers' img2img runs int(steps * strength) of the 4 trailing Lightning steps; a strength that runs none
    is refused when the settings are made, not deep inside diffusers."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline
    from pydantic import ValidationError

    from glimpse3d_core.backends.sdxl_enhance import SdxlSettings

    scheduler = EulerDiscreteScheduler(timestep_spacing="trailing")
    for strength, expected in ((0.25, 1), (0.5, 2), (0.74, 2), (0.75, 3), (1.0, 4)):
        assert SdxlSettings(strength=strength).denoising_steps == expected
        scheduler.set_timesteps(4)
        pipe = StableDiffusionXLImg2ImgPipeline.__new__(StableDiffusionXLImg2ImgPipeline)
        pipe.scheduler = scheduler
        timesteps, steps = StableDiffusionXLImg2ImgPipeline.get_timesteps(pipe, 4, strength, "cpu")
        assert steps == len(timesteps) == expected
    with pytest.raises(ValidationError, match="runs no denoising step"):
        SdxlSettings(strength=0.2)


TRAILING_4 = [999, 749, 499, 249]
"""EulerDiscreteScheduler's 4 timesteps with trailing spacing over SDXL's 1000 training steps."""


@pytest.mark.parametrize(("controlnet", "strength"), [("controlnet-depth-sdxl", 0.5), (None, 0.75)])
def test_sdxl_lightning_backend_equals_the_model_card_recipe(tmp_path, controlnet, strength) -> None:
    """Same tiny models, input and seed: the enhance backend's views equal the SDXL-Lightning model card's recipe
    run directly with diffusers: ``UNet2DConditionModel.from_config`` of SDXL base's unet config with the
    Lightning file's state dict loaded, the library's own ``from_pretrained`` for the other parts (fp16 variant
    files), ``EulerDiscreteScheduler.from_config(..., timestep_spacing="trailing")``, 4 inference steps,
    ``guidance_scale=0``, in the SDXL img2img pipeline (its ControlNet flavour with the depth ControlNet). Both
    sides get the same images: the backend's own compositing on white, resizing and depth control images. The
    recipe runs the last ``int(4 * strength)`` of the trailing timesteps."""
    from diffusers import (
        AutoencoderKL,
        ControlNetModel,
        EulerDiscreteScheduler,
        StableDiffusionXLControlNetImg2ImgPipeline,
        StableDiffusionXLImg2ImgPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from glimpse3d_core.backends.sdxl_enhance import (
        BACKGROUND,
        SdxlLightningEnhancer,
        SdxlSettings,
        depth_control_images,
    )
    from glimpse3d_core.imaging import resize
    from tests.test_backends import save_tiny_sdxl, tiny_views

    store = ModelStore(models_dir=tmp_path / "models", hf_cache_dir=tmp_path / "hf")
    specs = save_tiny_sdxl(store)
    settings = SdxlSettings(controlnet=controlnet, resolution=32, batch_size=8, strength=strength, seed=7)
    views, disc = tiny_views(3, 24)
    ours = SdxlLightningEnhancer(settings, store, device="cpu", models=specs).enhance(views, disc)

    base, lightning, vae = (store.status(specs[i]).root for i in ("sdxl-base", "sdxl-lightning-4step",
                                                                  "sdxl-vae-fp16-fix"))
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(base / "unet"))
    unet.load_state_dict(load_file(str(lightning / "sdxl_lightning_4step_unet.safetensors")))
    parts = {
        "unet": unet, "vae": AutoencoderKL.from_pretrained(vae),
        "text_encoder": CLIPTextModel.from_pretrained(base / "text_encoder", variant="fp16"),
        "text_encoder_2": CLIPTextModelWithProjection.from_pretrained(base / "text_encoder_2", variant="fp16"),
        "tokenizer": CLIPTokenizer.from_pretrained(base / "tokenizer"),
        "tokenizer_2": CLIPTokenizer.from_pretrained(base / "tokenizer_2"),
        "scheduler": EulerDiscreteScheduler.from_config(EulerDiscreteScheduler.load_config(base / "scheduler"),
                                                        timestep_spacing="trailing"),
    }
    size = (settings.resolution, settings.resolution)
    kwargs = {}
    if controlnet:
        parts["controlnet"] = ControlNetModel.from_pretrained(store.status(specs[controlnet]).root, variant="fp16")
        kwargs = {"control_image": resize(depth_control_images(views.depth[1:]), size),
                  "controlnet_conditioning_scale": settings.controlnet_scale}
    pipe_cls = StableDiffusionXLControlNetImg2ImgPipeline if controlnet else StableDiffusionXLImg2ImgPipeline
    pipe = pipe_cls(**parts, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    steps_run = []
    images = pipe(prompt=[settings.prompt] * (len(views) - 1), image=resize(views.composite(BACKGROUND)[1:], size),
                  strength=strength, num_inference_steps=4, guidance_scale=0.0, height=32, width=32,
                  output_type="np", generator=torch.Generator("cpu").manual_seed(settings.seed),
                  callback_on_step_end=lambda p, i, t, kw: steps_run.append(int(t)) or kw, **kwargs).images
    reference = resize(np.asarray(images, dtype=np.float32), views.rgb.shape[1:3])

    assert steps_run == TRAILING_4[4 - settings.denoising_steps:]
    error = np.abs(ours.rgb[1:] - reference).max() / np.abs(reference).max()
    print(f"sdxl-lightning backend vs model card recipe (controlnet={controlnet}, strength {strength}, timesteps "
          f"{steps_run}): max abs error / max = {error:.2e}")
    assert error <= 1e-4
    np.testing.assert_array_equal(ours.rgb[0], views.rgb[0])


@pytest.mark.parametrize("name", ["triposr", "syncdreamer"])
def test_verify_compares_a_checkpoint_with_the_released_key_list(name) -> None:
    """``glimpse3d models verify`` checks a downloaded file's keys and shapes against the released key list
    (full size, so checked here on the meta device: names and shapes only, no values)."""
    from glimpse3d_core.models.layout import BUILDERS, check_state_dict

    module, function = BUILDERS[name].split(":")
    built = getattr(__import__(module, fromlist=[function]), function)()
    state = built.state_dict() if isinstance(built, torch.nn.Module) else built
    assert check_state_dict(name, state).ok
    key = sorted(state)[0]
    broken = {k: v for k, v in state.items() if k != key}
    broken["extra.weight"] = torch.empty(1, device="meta")
    report = check_state_dict(name, broken)
    assert report.missing == [key] and report.unexpected == ["extra.weight"] and not report.ok
