"""Model backends on tiny, randomly initialised models of the real architectures.

Each tiny model is saved in the layout of the real download (Hugging Face cache snapshot, our model folder, or
rembg's home), described by the real spec with only the sizes/checksums swapped for the tiny files', and then
loaded through exactly the code users run (store lookup -> strict from_pretrained / rembg session).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from glimpse3d_core.cameras import syncdreamer16_rig
from glimpse3d_core.models.errors import CorruptWeightsError, MissingWeightsError
from glimpse3d_core.models.loading import clear_cache
from glimpse3d_core.models.registry import ModelSpec, get_spec
from glimpse3d_core.models.store import ModelStore
from glimpse3d_core.types import ObjectImage, ViewSet

SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


@pytest.fixture
def store(tmp_path, monkeypatch) -> ModelStore:
    """An empty model folder and HF cache; rembg's home pointed into tmp too."""
    monkeypatch.setenv("REMBG_HOME", str(tmp_path / "rembg"))
    monkeypatch.delenv("U2NET_HOME", raising=False)
    return ModelStore(models_dir=tmp_path / "models", hf_cache_dir=tmp_path / "hf")


def tiny_spec(spec: ModelSpec, root: Path) -> ModelSpec:
    """``spec`` with the same file paths, each with the exact size (and md5 where the real one has one) of the
    tiny file under ``root``; fails if the tiny layout lacks a file the real model has."""
    files = []
    for f in spec.files:
        path = root / f.path
        assert path.is_file(), f"tiny layout lacks {f.path}"
        md5 = hashlib.md5(path.read_bytes()).hexdigest() if f.md5 else None
        files.append(replace(f, size=path.stat().st_size, size_exact=True, md5=md5))
    return replace(spec, files=tuple(files))


def hf_snapshot(store: ModelStore, repo: str) -> Path:
    """The snapshot folder of ``repo`` at revision main inside the store's HF cache (refs/main written)."""
    repo_dir = store.hf_cache_dir / f"models--{repo.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(SNAPSHOT)
    snap = repo_dir / "snapshots" / SNAPSHOT
    snap.mkdir(parents=True, exist_ok=True)
    return snap


def photo(h: int = 48, w: int = 64) -> ObjectImage:
    """A disc of colour on black, alpha = the disc."""
    yy, xx = np.mgrid[0:h, 0:w]
    alpha = (((yy - h / 2) ** 2 + (xx - w / 2) ** 2) < (min(h, w) / 3) ** 2).astype(np.float32)
    rgb = np.stack([xx / w, yy / h, np.full_like(xx, 0.5, dtype=float)], -1).astype(np.float32) * alpha[..., None]
    return ObjectImage(rgb=rgb, alpha=alpha, name="disc")


# ---- depth: DPT ---------------------------------------------------------------------------------------------


def save_tiny_dpt(folder: Path) -> None:
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    torch.manual_seed(0)
    config = DPTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=37,
                       image_size=64, patch_size=16, backbone_out_indices=[0, 1, 2, 3],
                       neck_hidden_sizes=[8, 8, 16, 16], fusion_hidden_size=16, reassemble_factors=[4, 2, 1, 0.5])
    DPTForDepthEstimation(config).save_pretrained(folder)
    DPTImageProcessor(size={"height": 64, "width": 64}, keep_aspect_ratio=False).save_pretrained(folder)


def test_dpt_from_hf_cache_flips_inverse_depth(store):
    from glimpse3d_core.backends.dpt_depth import NEAR, DptDepth, disparity_to_relative_depth

    real = get_spec("dpt-hybrid-midas")
    snap = hf_snapshot(store, real.repo)
    save_tiny_dpt(snap)
    spec = tiny_spec(real, snap)
    assert store.status(spec).location == "HF cache"

    backend = DptDepth(spec, store, device="cpu")
    image = photo()
    result = backend(image)
    assert result.depth.shape == image.size and result.depth.dtype == np.float32 and not result.metric
    np.testing.assert_array_equal(result.valid, image.alpha > 0.5)
    fg = result.depth[result.valid]
    assert fg.min() == pytest.approx(NEAR) and fg.max() == pytest.approx(NEAR + 1)
    assert (result.depth[~result.valid] == 0).all()
    # The backend's depth is the flip of the model's own raw output: the nearest (largest-disparity)
    # foreground pixel gets the smallest depth, the farthest the largest.
    disparity = backend.disparity(image)
    np.testing.assert_allclose(result.depth, disparity_to_relative_depth(disparity, result.valid), atol=1e-6)
    d_fg = disparity[result.valid]
    assert fg[np.argmax(d_fg)] == pytest.approx(NEAR) and fg[np.argmin(d_fg)] == pytest.approx(NEAR + 1)
    assert DptDepth(spec, store, device="cpu").model is backend.model  # loaded once per process


def test_dpt_runs_in_the_dtype_the_config_asks_for(store, monkeypatch):
    """``dtype`` of the configuration reaches the model backend through the run context (bfloat16 here, on CPU)."""
    from glimpse3d_core.backends.base import build_stage_backend
    from glimpse3d_core.backends.dpt_depth import DptDepth
    from glimpse3d_core.config import PipelineConfig
    from glimpse3d_core.models.registry import MODELS

    real = get_spec("dpt-hybrid-midas")
    save_tiny_dpt(store.model_dir(real))
    monkeypatch.setitem(MODELS, real.id, tiny_spec(real, store.model_dir(real)))
    config = PipelineConfig(device="cpu", dtype="bfloat16")
    context = replace(config.context(), store=store)
    assert context.dtype == torch.bfloat16 and PipelineConfig(device="cpu").context().dtype == torch.float32
    backend = build_stage_backend("depth", config.depth, context)
    assert isinstance(backend, DptDepth) and next(backend.model.parameters()).dtype == torch.bfloat16
    image = photo()
    result = backend(image)
    assert result.depth.dtype == np.float32 and np.isfinite(result.depth).all()
    assert result.depth[result.valid].min() == pytest.approx(1.0)
    fp32 = DptDepth(real.id, store, device="cpu")  # the default dtype on CPU: another cached model
    assert next(fp32.model.parameters()).dtype == torch.float32 and fp32.model is not backend.model


def test_refine_depth_consistency_judges_views_with_dpt(store):
    """MVCRM's depth consistency with DPT's estimate of every view (a tiny random DPT: the mechanics, not the
    quality): every view gets a fit, each with a positive scale judges, and the consistency score is reported."""
    from glimpse3d_core.backends.dpt_depth import DptDepth
    from glimpse3d_core.render import render_views
    from glimpse3d_core.stages import refine
    from tests.test_stage_refine import plate

    real = get_spec("dpt-hybrid-midas")
    snap = hf_snapshot(store, real.repo)
    save_tiny_dpt(snap)
    backend = DptDepth(tiny_spec(real, snap), store, device="cpu")
    views = render_views(plate(), syncdreamer16_rig(48).subset([0, 4, 8, 12]))
    estimates = [backend(ObjectImage(views.rgb[i], views.alpha[i], f"view{i}")) for i in range(len(views))]
    cfg = refine.RefineConfig(normal_smoothing=False, color_fusion=False, gate=False, min_fit_r2=0.0)
    result = refine.run(plate(), views, estimates, cfg)
    assert len(result.depth_fits) == len(views) and all(np.isfinite(f.r2) for f in result.depth_fits)
    assert result.counts["depth_views_used"] == sum(f.scale > 0 for f in result.depth_fits) > 0
    assert np.isfinite(result.scores["depth_consistency_r2"])


def test_disparity_flip_convention():
    from glimpse3d_core.backends.dpt_depth import disparity_to_relative_depth

    # A ramp of disparity: larger on the left (nearer). Depth must grow to the right (farther).
    disparity = np.tile(np.linspace(10.0, 2.0, 101, dtype=np.float32), (5, 1))
    valid = np.ones_like(disparity, dtype=bool)
    valid[:, :3] = False
    depth = disparity_to_relative_depth(disparity, valid)
    assert (np.diff(depth[:, 3:], axis=1) >= 0).all() and depth[0, -1] > depth[0, 3]
    assert (depth[:, :3] == 0).all()
    with pytest.raises(ValueError, match="empty"):
        disparity_to_relative_depth(disparity, np.zeros_like(valid))


# ---- metrics: CLIP -------------------------------------------------------------------------------------------


def save_tiny_clip(folder: Path) -> None:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "vocab_size": 64, "max_position_embeddings": 16, "bos_token_id": 0, "eos_token_id": 1,
                     "pad_token_id": 1},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=8)
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)


def test_clip_similarity_from_model_folder(store):
    from glimpse3d_core.backends.clip_similarity import ClipSimilarity, clip_similarity_or_none

    real = get_spec("clip-vit-base-patch32")
    assert clip_similarity_or_none(np.zeros((8, 8, 3)), np.zeros((2, 8, 8, 3)), real.id, store) is None
    folder = store.model_dir(real)
    save_tiny_clip(folder)
    spec = tiny_spec(real, folder)
    clip = ClipSimilarity(spec, store, device="cpu")
    image = photo().composite(1.0)
    rng = np.random.default_rng(0)
    views = np.stack([image, rng.random(image.shape, dtype=np.float32), image[::-1]])
    sims = clip.per_view(image, views)
    assert sims.shape == (3,) and np.all(np.abs(sims) <= 1 + 1e-5)
    assert sims[0] == pytest.approx(1.0, abs=1e-5)  # the photo itself
    assert clip(image, views) == pytest.approx(float(sims.mean()))
    # The registry's own spec finds the tiny files too small: broken weights raise, they never give None.
    with pytest.raises(CorruptWeightsError, match="expected about 605,000,000"):
        clip_similarity_or_none(image, views, real.id, store)


# ---- segment: rembg ------------------------------------------------------------------------------------------


class TinyU2Net(torch.nn.Module):
    """U²-Net's interface at toy size: one RGB input [1,3,320,320] -> seven sigmoid maps [1,1,320,320]
    (d0 = fused map first, as rembg reads it). The encoder/decoder side maps are random; the fused map adds a
    fixed brightness term (zero-initialised fusion weights) so the expected mask of a test image is known."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.mid = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.dec = torch.nn.Conv2d(16, 8, 3, padding=1)
        self.sides = torch.nn.ModuleList(torch.nn.Conv2d(8, 1, 3, padding=1) for _ in range(6))
        self.fuse = torch.nn.Conv2d(6, 1, 1)
        self.brightness = torch.nn.Conv2d(3, 1, 1)
        with torch.no_grad():
            self.fuse.weight.zero_()
            self.fuse.bias.zero_()
            self.brightness.weight.fill_(1.0)
            self.brightness.bias.zero_()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        e = torch.relu(self.enc(x))
        m = torch.relu(self.mid(torch.nn.functional.max_pool2d(e, 2)))
        d = torch.relu(self.dec(torch.cat([torch.nn.functional.interpolate(m, scale_factor=2.0), e], 1)))
        sides = [s(d) for s in self.sides]
        fused = self.fuse(torch.cat(sides, 1)) + self.brightness(x)
        return tuple(torch.sigmoid(t) for t in (fused, *sides))


def export_tiny_u2net(path: Path) -> None:
    pytest.importorskip("onnx")
    torch.manual_seed(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notices
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(TinyU2Net().eval(), (torch.zeros(1, 3, 320, 320),), str(path), dynamo=False,
                          input_names=["input.1"], output_names=[f"d{i}" for i in range(7)])


def bright_rectangle() -> tuple[np.ndarray, np.ndarray]:
    """A white off-centre rectangle on black in a non-square image, and its mask."""
    rgb = np.zeros((60, 90, 3), dtype=np.float32)
    rgb[10:30, 50:80] = 1.0
    return rgb, rgb[..., 0] > 0.5


def check_mask(alpha: np.ndarray, inside: np.ndarray) -> None:
    assert alpha.shape == inside.shape and alpha.dtype == np.float32
    assert alpha.min() >= 0.0 and alpha.max() <= 1.0
    assert alpha[inside].mean() > 0.9 and alpha[~inside].mean() < 0.1  # orientation and scaling kept


def test_rembg_registered_model_from_model_folder_and_rembg_home(store, tmp_path):
    from glimpse3d_core.backends.rembg_segment import RembgSegmenter

    real = get_spec("rembg-u2net")
    with pytest.raises(MissingWeightsError, match="glimpse3d models download rembg-u2net"):
        RembgSegmenter.from_registry(real, store)
    onnx_file = store.model_dir(real) / "u2net.onnx"
    export_tiny_u2net(onnx_file)
    spec = tiny_spec(real, store.model_dir(real))
    segmenter = RembgSegmenter.from_registry(spec, store)
    rgb, inside = bright_rectangle()
    check_mask(segmenter(rgb), inside)
    assert RembgSegmenter.from_registry(spec, store).session is segmenter.session  # one session per process

    # A copy that only rembg's own home holds is found there (rembg's per-model layout).
    home_copy = tmp_path / "rembg" / "models" / "u2net" / "u2net.onnx"
    home_copy.parent.mkdir(parents=True)
    onnx_file.rename(home_copy)
    assert store.status(spec).location == "rembg home"
    check_mask(RembgSegmenter.from_registry(spec, store)(rgb), inside)


def test_rembg_custom_onnx_path(tmp_path):
    from glimpse3d_core.backends.rembg_segment import RembgSegmenter

    path = tmp_path / "anywhere" / "my_model.onnx"
    export_tiny_u2net(path)
    rgb, inside = bright_rectangle()
    check_mask(RembgSegmenter.from_onnx(path)(rgb), inside)
    with pytest.raises(FileNotFoundError):
        RembgSegmenter.from_onnx(tmp_path / "nope.onnx")
    with pytest.raises(ValueError, match="session family"):
        RembgSegmenter.from_onnx(path, session="no-such-family")
    with pytest.raises(ValueError, match="NaN"):
        RembgSegmenter.from_onnx(path)(np.full((4, 4, 3), np.nan, dtype=np.float32))


# ---- enhance: SDXL-Lightning (+ depth ControlNet) -------------------------------------------------------------


def write_tiny_tokenizer(folder: Path, max_length: int = 16) -> None:
    """A byte-level CLIP BPE tokenizer with no merges, saved as SDXL's tokenizer folders hold it."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    folder.mkdir(parents=True, exist_ok=True)
    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"),
                  model_max_length=max_length).save_pretrained(folder)
    (folder / "tokenizer.json").unlink(missing_ok=True)  # SDXL's repo has none: load from vocab + merges
    specials = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(specials))


def save_tiny_sdxl(store: ModelStore) -> dict[str, ModelSpec]:
    """Tiny SDXL base parts, Lightning UNet file, fp16-fix VAE and depth ControlNet in the model folder."""
    from diffusers import AutoencoderKL, ControlNetModel, EulerDiscreteScheduler, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    ids = {i: get_spec(i) for i in ("sdxl-base", "sdxl-lightning-4step", "sdxl-vae-fp16-fix",
                                    "controlnet-depth-sdxl")}
    base = store.model_dir(ids["sdxl-base"])
    text = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
            "vocab_size": 514, "max_position_embeddings": 16, "projection_dim": 16, "bos_token_id": 512,
            "eos_token_id": 513, "pad_token_id": 513}
    CLIPTextModel(CLIPTextConfig(**text)).save_pretrained(base / "text_encoder", variant="fp16")
    CLIPTextModelWithProjection(CLIPTextConfig(**text)).save_pretrained(base / "text_encoder_2", variant="fp16")
    for sub in ("tokenizer", "tokenizer_2"):
        write_tiny_tokenizer(base / sub)
    EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                           timestep_spacing="leading").save_pretrained(base / "scheduler")
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), norm_num_groups=8, use_linear_projection=True, cross_attention_dim=32,
        addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=6 * 8 + 16)
    unet.save_config(base / "unet")
    lightning = store.model_dir(ids["sdxl-lightning-4step"])
    lightning.mkdir(parents=True)
    save_file(unet.state_dict(), lightning / "sdxl_lightning_4step_unet.safetensors")
    AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8,
                  sample_size=32).save_pretrained(store.model_dir(ids["sdxl-vae-fp16-fix"]))
    ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16)).save_pretrained(
        store.model_dir(ids["controlnet-depth-sdxl"]), variant="fp16")
    return {i: tiny_spec(spec, store.model_dir(spec)) for i, spec in ids.items()}


def tiny_views(count: int = 3, size: int = 24) -> tuple[ViewSet, ObjectImage]:
    rig = syncdreamer16_rig(size).subset(list(range(count)))
    disc = photo(size, size)
    rgb = np.stack([disc.rgb] * count)
    alpha = np.stack([disc.alpha] * count)
    depth = np.where(alpha > 0, 1.5 - 0.3 * rgb[..., 0], 0.0).astype(np.float32)
    return ViewSet(rig=rig, rgb=rgb, alpha=alpha, depth=depth), disc


@pytest.mark.parametrize("with_controlnet", [True, False])
def test_sdxl_lightning_enhances_generated_views_only(store, with_controlnet):
    from glimpse3d_core.backends.sdxl_enhance import SdxlLightningEnhancer, SdxlSettings

    specs = save_tiny_sdxl(store)
    controlnet = "controlnet-depth-sdxl" if with_controlnet else None
    settings = SdxlSettings(controlnet=controlnet, resolution=32, batch_size=2, strength=0.5)
    enhancer = SdxlLightningEnhancer(settings, store, device="cpu", models=specs)
    scheduler = enhancer.pipe.scheduler
    assert type(scheduler).__name__ == "EulerDiscreteScheduler" and scheduler.config.timestep_spacing == "trailing"
    assert type(enhancer.pipe).__name__ == ("StableDiffusionXLControlNetImg2ImgPipeline" if with_controlnet
                                             else "StableDiffusionXLImg2ImgPipeline")
    views, disc = tiny_views()
    out = enhancer.enhance(views, disc)
    assert out.rgb.shape == views.rgb.shape and out.rgb.dtype == np.float32
    assert np.isfinite(out.rgb).all() and out.rgb.min() >= 0 and out.rgb.max() <= 1
    np.testing.assert_array_equal(out.rgb[0], views.rgb[0])  # the photo is never altered
    assert np.abs(out.rgb[1:] - views.rgb[1:]).max() > 1e-3  # the generated views went through SDXL
    for name in ("alpha", "depth", "weights"):
        np.testing.assert_array_equal(getattr(out, name), getattr(views, name))
    assert out.rig is views.rig


def test_sdxl_missing_parts_name_every_download(store):
    from glimpse3d_core.backends.sdxl_enhance import SdxlLightningEnhancer

    with pytest.raises(MissingWeightsError) as info:
        SdxlLightningEnhancer(store=store, device="cpu")
    assert ("glimpse3d models download sdxl-base sdxl-lightning-4step sdxl-vae-fp16-fix controlnet-depth-sdxl"
            in str(info.value))


def test_control_images_are_near_bright():
    from glimpse3d_core.backends.sdxl_enhance import depth_control_images

    depth = np.array([[[0.0, 1.0, 2.0, 3.0]], [[0.0, 0.0, 0.0, 0.0]]], dtype=np.float32)
    control = depth_control_images(depth)
    assert control.shape == (2, 1, 4, 3)
    np.testing.assert_allclose(control[0, 0, :, 0], [0.0, 1.0, 0.5, 0.0])
    assert (control[1] == 0).all()
