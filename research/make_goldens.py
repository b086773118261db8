"""Regenerate tests/golden/ from the upstream code: ``python research/make_goldens.py {triposr|syncdreamer} CHECKOUT``.

CHECKOUT is a copy of VAST-AI-Research/TripoSR or liuyuan-pal/SyncDreamer outside this project (never committed
here), e.g. ``git --git-dir=<mirror> archive <commit> | tar -x -C /tmp/ref/triposr``; give ``--commit`` when the
copy is not a git work tree. Run it with the upstream's own dependencies (TripoSR pins transformers 4.35.0; both
need omegaconf and einops; SyncDreamer needs kornia, openai-clip, pytorch_lightning is stubbed), e.g. in a venv
made with ``python3 -m venv --system-site-packages``, with this project on PYTHONPATH (for the reduced configs and
the seeded weights of :mod:`glimpse3d_core.models.golden`).

Substitutions, all in this driver only (the upstream files are not modified):

* TripoSR: ``torchmcubes`` (not on PyPI) is replaced by PyMCubes, returning vertices in torchmcubes' order (last
  grid index first: tatsy/torchmcubes cxx/mcubes_cpu.cpp reads ``vol[z][y][x]`` and emits ``XYZ(x, y, z)``), so
  upstream's own ``[2, 1, 0]`` reordering and scaling run unchanged. Both are classic (Lorensen) marching cubes:
  one vertex per grid edge the level crosses, so the vertex set does not depend on which one runs.
  ``hf_hub_download`` of the DINO config returns a local config.json with the reduced ViT widths.
* SyncDreamer: see :func:`syncdreamer` (reduced hard-coded widths, a tiny OpenAI CLIP built by ``clip.model.CLIP``
  instead of loading ViT-L-14.pt, stubs for imports that inference never calls).

Outputs: ``tests/golden/<name>.safetensors`` (inputs and outputs, float32) and ``tests/golden/<name>.json`` (the
upstream commit, the reduced config, the seed, and the settings used).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"


def _commit(checkout: Path, given: str | None) -> str:
    if given:
        return given
    try:
        return subprocess.check_output(["git", "-C", str(checkout), "rev-parse", "HEAD"], text=True).strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        raise SystemExit(f"{checkout} is not a git work tree: pass --commit SHA") from None


def _save(name: str, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    from safetensors.torch import save_file

    GOLDEN.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().float().contiguous() for k, v in tensors.items()}, str(GOLDEN / f"{name}.safetensors"))
    (GOLDEN / f"{name}.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    size = (GOLDEN / f"{name}.safetensors").stat().st_size
    print(f"wrote {GOLDEN / name}.safetensors ({size / 1e6:.2f} MB, {len(tensors)} tensors)")


# ---- TripoSR ----------------------------------------------------------------------------------------------------

TRIPOSR_MC_RESOLUTION = 32
TRIPOSR_QUERY_POINTS = 512
TRIPOSR_THRESHOLD_QUANTILE = 0.7
TRIPOSR_RENDER_SIZE = 64

def golden_input_image(seed: int) -> np.ndarray:
    """A fixed RGBA uint8 photo [60, 50, 4]: an off-centre ellipse of random colours on transparent black."""
    rng = np.random.default_rng(seed)
    h, w = 60, 50
    yy, xx = np.mgrid[:h, :w]
    alpha = (((yy - 27) / 22.0) ** 2 + ((xx - 22) / 15.0) ** 2 <= 1.0).astype(np.uint8) * 255
    rgb = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) * (alpha[..., None] > 0)
    return np.concatenate([rgb, alpha[..., None]], axis=-1).astype(np.uint8)


def _torchmcubes_substitute() -> types.ModuleType:
    import mcubes

    def marching_cubes(volume: torch.Tensor, level: float) -> tuple[torch.Tensor, torch.Tensor]:
        verts, faces = mcubes.marching_cubes(volume.detach().cpu().double().numpy(), level)
        # PyMCubes gives (i, j, k) grid-index order; torchmcubes gives (k, j, i), which upstream reorders.
        verts = torch.from_numpy(np.ascontiguousarray(verts[:, ::-1])).float()
        return verts, torch.from_numpy(faces.astype(np.int64))

    module = types.ModuleType("torchmcubes")
    module.marching_cubes = marching_cubes  # type: ignore[attr-defined]
    return module


def triposr(checkout: Path, commit: str, seed: int) -> None:
    import PIL.Image
    from omegaconf import OmegaConf

    from glimpse3d_core.models.golden import (
        TRIPOSR_FRAMES_COLOR,
        TRIPOSR_FRAMES_SHARPNESS,
        TRIPOSR_SLANT,
        seeded_state_dict,
        triposr_frames_field,
    )
    from glimpse3d_core.models.triposr.config import TripoSRConfig

    sys.modules["torchmcubes"] = _torchmcubes_substitute()
    sys.path.insert(0, str(checkout))
    import tsr.models.tokenizers.image as image_tokenizer_module
    from tsr.system import TSR
    from tsr.utils import resize_foreground

    ours = TripoSRConfig.tiny()
    vit = ours.image_tokenizer
    vit_json = Path("/tmp") / f"golden_dino_config_{seed}.json"
    vit_json.write_text(json.dumps({
        "architectures": ["ViTModel"], "model_type": "vit", "hidden_size": vit.hidden_size,
        "num_hidden_layers": vit.num_hidden_layers, "num_attention_heads": vit.num_attention_heads,
        "intermediate_size": vit.intermediate_size, "hidden_act": vit.hidden_act, "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0, "layer_norm_eps": vit.layer_norm_eps, "image_size": vit.image_size,
        "patch_size": vit.patch_size, "num_channels": 3, "qkv_bias": vit.qkv_bias,
    }))
    image_tokenizer_module.hf_hub_download = lambda **_: str(vit_json)
    cfg = ours.to_yaml_dict()
    cfg["image_tokenizer"] = {"pretrained_model_name_or_path": "facebook/dino-vitb16"}
    model = TSR(OmegaConf.create(cfg)).eval()
    layout = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(seeded_state_dict(layout, seed=seed), strict=True)

    # Pre-processing as run.py: resize_foreground(0.85), composite over grey 0.5, ImagePreprocessor (in forward).
    rgba = golden_input_image(seed)
    framed = np.asarray(resize_foreground(PIL.Image.fromarray(rgba, "RGBA"), 0.85)).astype(np.float32) / 255.0
    framed = framed[:, :, :3] * framed[:, :, 3:4] + (1 - framed[:, :, 3:4]) * 0.5
    cond = model.image_processor(framed, model.cfg.cond_image_size)  # [1, S, S, 3]

    with torch.no_grad():
        tokens = model.image_tokenizer(cond.permute(0, 3, 1, 2))  # [1, C, Nt]
        scene_codes = model(framed, device="cpu")  # [1, 3, C, 2P, 2P]
        gen = torch.Generator().manual_seed(seed)
        radius = model.renderer.cfg.radius
        points = (torch.rand(TRIPOSR_QUERY_POINTS, 3, generator=gen) * 2 - 1) * radius
        queried = model.renderer.query_triplane(model.decoder, points, scene_codes[0])
        grid = model.renderer.query_triplane(
            model.decoder,
            torch.stack(torch.meshgrid(*[torch.linspace(-radius, radius, TRIPOSR_MC_RESOLUTION)] * 3, indexing="ij"),
                        -1).reshape(-1, 3),
            scene_codes[0],
        )["density_act"]
    threshold = float(torch.quantile(grid.flatten(), TRIPOSR_THRESHOLD_QUANTILE))
    mesh = model.extract_mesh(scene_codes, True, resolution=TRIPOSR_MC_RESOLUTION, threshold=threshold)[0]

    # The reference renderer's silhouette of an analytic slanted-ellipsoid field for its default camera (view 0 of
    # render(): azimuth 0, elevation 0, distance 1.9, fovy 40 deg), loaded into upstream's own decoder, with the
    # released 128 samples per ray.
    _, decoder, planes = triposr_frames_field()
    model.decoder.load_state_dict(decoder.state_dict(), strict=True)
    model.renderer.cfg.num_samples_per_ray = 128
    render = model.render(planes[None], n_views=1, height=TRIPOSR_RENDER_SIZE, width=TRIPOSR_RENDER_SIZE,
                          return_type="pt")[0][0]
    opacity = (1.0 - render.mean(-1)) / (1.0 - TRIPOSR_FRAMES_COLOR[0])

    tensors = {
        "input_rgba": torch.from_numpy(rgba).float(),
        "cond_image": cond[0].permute(2, 0, 1),
        "image_tokens": tokens[0].transpose(0, 1),  # [Nt, C]: ours' layout
        "scene_codes": scene_codes[0],
        "query_points": points,
        "query_density": queried["density_act"][:, 0],
        "query_color": queried["color"],
        "mesh_vertices": torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float32),
        "mesh_faces": torch.as_tensor(np.asarray(mesh.faces), dtype=torch.float32),
        "frames_opacity": opacity,
    }
    meta = {
        "upstream": f"VAST-AI-Research/TripoSR@{commit}",
        "seed": seed,
        "config": cfg,
        "vit_config": json.loads(vit_json.read_text()),
        "state_dict": {k: list(v) for k, v in layout.items()},
        "mc_resolution": TRIPOSR_MC_RESOLUTION,
        "mc_threshold": threshold,
        "mc_threshold_rule": f"quantile {TRIPOSR_THRESHOLD_QUANTILE} of the density on the grid",
        "marching_cubes": "PyMCubes in place of torchmcubes (vertices returned in torchmcubes' k,j,i order)",
        "render": {"camera": "render() view 0: azimuth 0, elevation 0, distance 1.9, fovy 40",
                   "size": TRIPOSR_RENDER_SIZE, "field": TRIPOSR_SLANT,
                   "color": TRIPOSR_FRAMES_COLOR, "sharpness": TRIPOSR_FRAMES_SHARPNESS,
                   "samples_per_ray": 128, "plane_size": 32},
        "created_with": {"torch": torch.__version__, "transformers": __import__("transformers").__version__},
    }
    _save("triposr", tensors, meta)


SYNCDREAMER_ELEVATION_DEG = 30.0
SYNCDREAMER_CFG_SCALE = 2.0
SYNCDREAMER_UNET_STEPS = (49, 25)
"""Indices into the 50-step schedule (t = 981 and 501) at which the noise prediction of all 16 views is saved."""
SYNCDREAMER_SAMPLE_STEPS = 4
"""The sampled golden runs DDIM with a 4-step schedule (t = 751, 501, 251, 1): three stochastic steps from
fixed noise, then the last (noise-free) one. (3 steps cannot be asked of upstream: its make_ddim_timesteps gives
range(0, 1000, 333) + 1, four timesteps, the last one 1000, out of the schedule.)"""


def _stub(name: str, **attrs: object) -> None:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module


def syncdreamer(checkout: Path, commit: str, seed: int) -> None:
    """Upstream's SyncMultiviewDiffusion with reduced widths (:func:`syncdreamer_golden_config`). It hard-codes
    some widths, so this driver replaces (never edits) two constructors and one loader, keeping upstream's own
    classes and every forward pass:

    * ``SyncMultiviewDiffusion._init_first_stage``: upstream's AutoencoderKL config with ``ch``/``ch_mult``/
      ``num_res_blocks`` reduced;
    * ``clip.load`` (which would read ViT-L-14.pt) returns a tiny ``clip.model.CLIP`` (embedding width kept at
      768, which upstream hard-codes); upstream's FrozenCLIPImageEmbedder wraps it as usual;
    * ``SpatialVolumeNet.__init__``: upstream's constructor, then its three networks rebuilt with reduced widths,
      and the model's image size passed on (upstream passes none, so any size but 256 would break its frustum);
    * imports that inference never calls are stubbed: pytorch_lightning (LightningModule = nn.Module with
      ``device``), taming, torchvision, cv2.
    """
    from torch import nn

    from glimpse3d_core.models.golden import seeded_state_dict, syncdreamer_golden_config

    cfg = syncdreamer_golden_config()
    import transformers.utils.import_utils  # noqa: F401  (probes optional packages before the stubs exist)

    class LightningModule(nn.Module):  # the one LightningModule member inference uses
        device = property(lambda self: next(self.parameters()).device)

    _stub("pytorch_lightning", LightningModule=LightningModule)
    _stub("taming"), _stub("taming.modules"), _stub("taming.modules.vqvae")
    _stub("taming.modules.vqvae.quantize", VectorQuantizer2=None)
    names = ("Compose", "Resize", "CenterCrop", "ToTensor", "Normalize", "InterpolationMode")
    _stub("torchvision.transforms", **{n: None for n in names[:-1]},
          InterpolationMode=types.SimpleNamespace(BICUBIC="bicubic"))
    _stub("torchvision", transforms=sys.modules["torchvision.transforms"])
    _stub("cv2")
    import os

    os.chdir(checkout)
    sys.path.insert(0, str(checkout))
    import clip
    import ldm.models.diffusion.sync_dreamer as sd
    from ldm.models.diffusion.sync_dreamer_network import FrustumTV3DNet, NoisyTargetViewEncoder, SpatialTime3DNet
    from ldm.util import instantiate_from_config

    def tiny_clip(name: str, device: str = "cpu", jit: bool = False) -> tuple[nn.Module, None]:
        c = cfg.clip
        model = clip.model.CLIP(
            embed_dim=c.embed_dim, image_resolution=c.image_resolution, vision_layers=c.vision_layers,
            vision_width=c.vision_width, vision_patch_size=c.patch_size, context_length=c.context_length,
            vocab_size=c.vocab_size, transformer_width=c.text_width, transformer_heads=1, transformer_layers=1,
        )
        return model.float(), None

    clip.load = tiny_clip

    def init_first_stage(self: sd.SyncMultiviewDiffusion) -> None:
        v = cfg.vae
        self.first_stage_scale_factor = 0.18215
        self.first_stage_model = sd.disable_training_module(instantiate_from_config({
            "target": "ldm.models.autoencoder.AutoencoderKL",
            "params": {"embed_dim": v.embed_dim, "monitor": "val/rec_loss",
                       "lossconfig": {"target": "torch.nn.Identity"},
                       "ddconfig": {"double_z": True, "z_channels": v.z_channels, "resolution": self.image_size,
                                    "in_channels": 3, "out_ch": 3, "ch": v.ch, "ch_mult": list(v.ch_mult),
                                    "num_res_blocks": v.num_res_blocks, "attn_resolutions": [], "dropout": 0.0}},
        }))

    original_volume_init = sd.SpatialVolumeNet.__init__

    def volume_init(self: sd.SpatialVolumeNet, time_dim: int, view_dim: int, view_num: int, **_: object) -> None:
        vol = cfg.volume
        original_volume_init(self, time_dim, view_dim, view_num, input_image_size=cfg.image_size,
                             frustum_volume_depth=vol.frustum_depth, spatial_volume_size=vol.spatial_volume_size,
                             spatial_volume_length=vol.spatial_volume_length, frustum_volume_length=vol.frustum_length)
        self.target_encoder = NoisyTargetViewEncoder(time_dim, view_dim, run_dim=vol.encoder_channels,
                                                     output_dim=vol.view_feature_channels)
        self.spatial_volume_feats = SpatialTime3DNet(input_dim=vol.view_feature_channels * view_num,
                                                     time_dim=time_dim, dims=vol.spatial_dims)
        self.frustum_volume_feats = FrustumTV3DNet(vol.spatial_dims[0], time_dim, view_dim, dims=vol.frustum_dims)

    sd.SyncMultiviewDiffusion._init_first_stage = init_first_stage
    sd.SpatialVolumeNet.__init__ = volume_init
    u = cfg.unet
    unet_config = {"target": "ldm.models.diffusion.sync_dreamer_attention.DepthWiseAttention", "params": {
        "volume_dims": list(cfg.volume.frustum_dims), "image_size": cfg.latent_size, "in_channels": u.in_channels,
        "out_channels": u.out_channels, "model_channels": u.model_channels,
        "attention_resolutions": list(u.attention_resolutions), "num_res_blocks": u.num_res_blocks,
        "channel_mult": list(u.channel_mult), "num_heads": u.num_heads, "use_spatial_transformer": True,
        "transformer_depth": u.transformer_depth, "context_dim": u.context_dim, "use_checkpoint": False,
        "legacy": False,
    }}
    model = sd.SyncMultiviewDiffusion(unet_config, scheduler_config=None, view_num=cfg.num_views,
                                      image_size=cfg.image_size, cfg_scale=SYNCDREAMER_CFG_SCALE,
                                      clip_image_encoder_path="ViT-L-14.pt", sample_steps=50).eval()
    state = model.state_dict()
    buffers = {k for k, _ in model.named_buffers() if k in state}
    layout = {k: tuple(v.shape) for k, v in state.items()}
    model.load_state_dict(seeded_state_dict(layout, keep={k: state[k] for k in buffers}, seed=seed), strict=True)

    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(1, cfg.image_size, cfg.image_size, 3, generator=gen) * 2 - 1
    elevation = torch.tensor([[np.deg2rad(SYNCDREAMER_ELEVATION_DEG)]], dtype=torch.float32)
    h = cfg.latent_size
    noisy = torch.randn(1, cfg.num_views, 4, h, h, generator=gen)
    torch.manual_seed(seed + 1)  # the posterior sample of prepare()
    _, clip_embed, input_info = model.prepare({"input_image": image, "input_elevation": elevation})

    sampler = model.sampler
    captured: list[torch.Tensor] = []
    original_impl = sampler.denoise_apply_impl

    def capture(x: torch.Tensor, index: int, noise_pred: torch.Tensor, is_step0: bool = False) -> torch.Tensor:
        captured.append(noise_pred.clone())
        return original_impl(x, index, noise_pred, is_step0)

    sampler.denoise_apply_impl = capture
    eps = {}
    for index in SYNCDREAMER_UNET_STEPS:
        t = int(sampler.ddim_timesteps[index])
        sampler.denoise_apply(noisy, input_info, clip_embed, torch.full((1,), t, dtype=torch.long), index,
                              SYNCDREAMER_CFG_SCALE, batch_view_num=cfg.num_views, is_step0=False)
        eps[f"eps_t{t}"] = captured.pop()[0]
    sampler.denoise_apply_impl = original_impl

    short = sd.SyncDDIMSampler(model, SYNCDREAMER_SAMPLE_STEPS, "uniform", 1.0, latent_size=h)
    torch.manual_seed(seed + 2)  # the initial noise and every step's noise (torch.randn / randn_like)
    latents, _ = short.sample(input_info, clip_embed, unconditional_scale=SYNCDREAMER_CFG_SCALE,
                              batch_view_num=cfg.num_views)
    decoded = torch.stack([model.decode_first_stage(latents[:, i]) for i in range(cfg.num_views)], 1)

    tensors = {
        "input_image": image[0].permute(2, 0, 1),
        "clip_embed": clip_embed[0],
        "input_latent_scaled": input_info["x"][0],
        "noisy_latents": noisy[0],
        **eps,
        "sample_latents": latents[0],
        "decoded_views": decoded[0].clamp(-1, 1),
        **{f"buffer.{k}": state[k] for k in sorted(buffers)},
    }
    meta = {
        "upstream": f"liuyuan-pal/SyncDreamer@{commit}",
        "seed": seed,
        "config": __import__("dataclasses").asdict(cfg),
        "state_dict": {k: list(v) for k, v in layout.items()},
        "elevation_deg": SYNCDREAMER_ELEVATION_DEG,
        "cfg_scale": SYNCDREAMER_CFG_SCALE,
        "eps_timesteps": [int(sampler.ddim_timesteps[i]) for i in SYNCDREAMER_UNET_STEPS],
        "sample_steps": SYNCDREAMER_SAMPLE_STEPS,
        "sample_timesteps": [int(t) for t in short.ddim_timesteps],
        "rng": {"posterior": seed + 1, "sampling": seed + 2,
                "note": "torch.manual_seed before prepare() and before sample(); CPU generator"},
        "created_with": {"torch": torch.__version__, "kornia": __import__("kornia").__version__},
    }
    _save("syncdreamer", tensors, meta)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", choices=["triposr", "syncdreamer"])
    parser.add_argument("checkout", type=Path, help="the upstream repository's files (outside this project)")
    parser.add_argument("--commit", help="the upstream commit of CHECKOUT (default: git rev-parse HEAD in it)")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    from glimpse3d_core.models.golden import GOLDEN_SEED

    seed = GOLDEN_SEED if args.seed is None else args.seed
    checkout = args.checkout.resolve()
    torch.set_grad_enabled(False)
    {"triposr": triposr, "syncdreamer": syncdreamer}[args.model](checkout, _commit(checkout, args.commit), seed)


if __name__ == "__main__":
    main()
