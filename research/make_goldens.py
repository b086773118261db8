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
  one vertex per grid edge the level crosses, so the vertex set does not depend on which one runs; ``hf_hub_download`` of
  the DINO config returns a local config.json with the reduced ViT widths.
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
TRIPOSR_ELLIPSOID = (0.55, 0.35, 0.25)
"""Semi-axes (x back, y right, z up; units of the radius) of the analytic field rendered for the frames test."""
TRIPOSR_ELLIPSOID_COLOR = (0.01, 0.01, 0.01)
"""Near-black, so that the white-composited render gives the opacity: opacity = (1 - rgb) / 0.99."""


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

    from glimpse3d_core.models.golden import seeded_state_dict
    from glimpse3d_core.models.triposr.config import TripoSRConfig
    from glimpse3d_core.models.triposr.synthetic import ellipsoid_field

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

    # The reference renderer's silhouette of an analytic ellipsoid field for its default camera (view 0 of
    # render(): azimuth 0, elevation 0, distance 1.9, fovy 40 deg), loaded into upstream's own decoder.
    decoder, planes = ellipsoid_field(ours, TRIPOSR_ELLIPSOID, TRIPOSR_ELLIPSOID_COLOR)
    model.decoder.load_state_dict(decoder.state_dict(), strict=True)
    render = model.render(planes[None], n_views=1, height=TRIPOSR_RENDER_SIZE, width=TRIPOSR_RENDER_SIZE,
                          return_type="pt")[0][0]
    opacity = (1.0 - render.mean(-1)) / (1.0 - TRIPOSR_ELLIPSOID_COLOR[0])

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
        "ellipsoid_opacity": opacity,
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
                   "size": TRIPOSR_RENDER_SIZE, "ellipsoid_semi_axes": TRIPOSR_ELLIPSOID,
                   "ellipsoid_color": TRIPOSR_ELLIPSOID_COLOR},
        "created_with": {"torch": torch.__version__, "transformers": __import__("transformers").__version__},
    }
    _save("triposr", tensors, meta)


def syncdreamer(checkout: Path, commit: str, seed: int) -> None:
    raise NotImplementedError


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
