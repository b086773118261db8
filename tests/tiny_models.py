"""Tiny randomly initialised models of the learned backends' real architectures, saved where the model store
looks for the released weights (GLIMPSE3D_MODELS_DIR, the registry's file names), for tests that load them through
the real code path. No Dagster import, so CUDA-only tests can use it on a bare GPU machine."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import save_file

from glimpse3d_core.backends.syncdreamer_multiview import SyncDreamerSettings
from glimpse3d_core.models.layout import layouts_of, reference_layout
from glimpse3d_core.models.library_layouts import RELEASED_FILES
from glimpse3d_core.models.loading import clear_cache
from glimpse3d_core.models.registry import MODELS, ModelSpec, get_spec
from glimpse3d_core.models.store import ModelStore
from glimpse3d_core.models.syncdreamer import SyncDreamer, SyncDreamerConfig
from glimpse3d_core.models.triposr import TripoSR, TripoSRConfig
from tests.test_backends import tiny_spec, write_tiny_tokenizer

TINY_SYNCDREAMER = SyncDreamerSettings(steps=1, batch_view_num=16, crop_size=50, architecture="tiny")


@pytest.fixture
def store(tmp_path, monkeypatch) -> ModelStore:
    """An empty model folder and HF cache; the per-process model cache is emptied before and after."""
    monkeypatch.setenv("GLIMPSE3D_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    clear_cache()
    yield ModelStore()
    clear_cache()


def install(store: ModelStore, monkeypatch, model_id: str) -> None:
    """Register the tiny files just written under ``<models dir>/<id>/`` with their exact sizes (the real
    registry sizes would rightly call them broken downloads)."""
    real = get_spec(model_id)
    monkeypatch.setitem(MODELS, model_id, tiny_spec(real, store.model_dir(real)))


def save_tiny_triposr(store: ModelStore, monkeypatch) -> None:
    torch.manual_seed(0)
    model = TripoSR(TripoSRConfig.tiny())
    folder = store.models_dir / "triposr"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(model.config.to_yaml_dict()))
    torch.save(model.checkpoint_state_dict(), folder / "model.ckpt")
    install(store, monkeypatch, "triposr")


def save_tiny_syncdreamer(store: ModelStore, monkeypatch) -> None:
    torch.manual_seed(0)
    folder = store.models_dir / "syncdreamer"
    folder.mkdir(parents=True)
    torch.save({"state_dict": SyncDreamer(SyncDreamerConfig.tiny()).state_dict()},
               folder / "syncdreamer-pretrain.ckpt")
    install(store, monkeypatch, "syncdreamer")




# ---- the library models' released layouts at tiny widths -------------------------------------------------------

_TINY_TEXT = {"hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2, "vocab_size": 514,
              "max_position_embeddings": 16, "projection_dim": 16, "bos_token_id": 512, "eos_token_id": 513,
              "pad_token_id": 513}
_TINY_UNET = {"block_out_channels": [16, 32, 64], "attention_head_dim": [2, 2, 4], "norm_num_groups": 8,
              "cross_attention_dim": 32, "addition_time_embed_dim": 8,
              "projection_class_embeddings_input_dim": 6 * 8 + 16}
_TINY_CLIP = {"projection_dim": 8,
              "text_config": {"hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2, "vocab_size": 64,
                              "max_position_embeddings": 16, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1},
              "vision_config": {"hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2,
                                "image_size": 32, "patch_size": 8}}
_TINY_VIT = {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 37, "image_size": 64,
             "fusion_hidden_size": 16}
TINY_WIDTHS: dict[str, dict[str, Any]] = {
    "dpt-large": {**_TINY_VIT, "neck_hidden_sizes": [8, 8, 16, 16]},
    "dpt-hybrid-midas": {**_TINY_VIT, "neck_hidden_sizes": [16, 32, 16, 16], "backbone_featmap_shape": [1, 64, 4, 4],
                         "backbone_config": {"hidden_sizes": [16, 32, 64, 128], "embedding_size": 16,
                                             "num_groups": 2}},
    "clip-vit-base-patch32": _TINY_CLIP,
    "clip-vit-large-patch14": _TINY_CLIP,
    "sdxl-base.text_encoder": _TINY_TEXT,
    "sdxl-base.text_encoder_2": _TINY_TEXT,
    "sdxl-lightning-4step": {**_TINY_UNET, "sample_size": 8},
    "sdxl-vae-fp16-fix": {"block_out_channels": [8, 16, 32, 32], "norm_num_groups": 8, "sample_size": 32},
    "controlnet-depth-sdxl": {**_TINY_UNET, "conditioning_embedding_out_channels": [4, 8, 12, 16]},
}
"""Layout name -> config values that shrink the released architecture's widths while keeping its block structure
(layer counts, block types, transformer depths, conditioning stages, where channel counts change): the same key
names, tiny shapes."""


def _merged(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        out[key] = _merged(out[key], value) if isinstance(value, Mapping) and key in out else value
    return out


def tiny_config(name: str) -> dict[str, Any]:
    """The released config of layout ``name`` with :data:`TINY_WIDTHS` applied."""
    return _merged(RELEASED_FILES[name].config, TINY_WIDTHS[name])


def released_tensors(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded random weights of the tiny architecture under exactly the released key list's names (a key the
    architecture has that the released file omits is left out; CLIP's position-id buffers, which released CLIP
    files hold, are added), in the released file's dtype."""
    released = RELEASED_FILES[name]
    torch.manual_seed(seed)
    model = released.build(tiny_config(name), device="cpu")
    state = model.state_dict()
    listed, _ = reference_layout(name)
    assert set(listed) <= set(state), "the tiny architecture lacks listed keys"
    tensors = {k: state[k].to(getattr(torch, released.dtype)).contiguous() for k in listed}
    for key, buffer in model.named_buffers():
        if key.endswith("embeddings.position_ids"):  # a non-persistent buffer today
            tensors[key] = buffer.clone()
    return tensors


def write_released_file(folder, name: str, tensors: Mapping[str, torch.Tensor]) -> None:
    """``tensors`` as layout ``name``'s weight file under ``folder`` (the model's folder), with the tiny
    config.json beside it."""
    released = RELEASED_FILES[name]
    path = folder / released.weights
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(dict(tensors), str(path), metadata={"format": "pt"})
    if released.model_id != "sdxl-lightning-4step":  # a bare weight file; its config is SDXL base's unet/
        model = released.build(tiny_config(name), device="meta")
        (model.config.save_pretrained if released.library == "transformers" else model.save_config)(path.parent)


def save_released_model(store: ModelStore, model_id: str) -> tuple[ModelSpec, dict[str, dict[str, torch.Tensor]]]:
    """Every released weight file of ``model_id`` in its exact released layout at tiny widths, plus the model's
    other files (processor configs, tokenizers, scheduler, SDXL base's UNet config), in the store's model folder;
    returns the registry spec with the tiny files' sizes and the tensors written, by layout name."""
    from diffusers import EulerDiscreteScheduler
    from transformers import CLIPImageProcessor, DPTImageProcessor

    real = get_spec(model_id)
    folder = store.model_dir(real)
    written = {}
    for name, _ in layouts_of(model_id):
        written[name] = released_tensors(name)
        write_released_file(folder, name, written[name])
    if real.loader == "dpt":
        DPTImageProcessor(size={"height": 64, "width": 64}, keep_aspect_ratio=False).save_pretrained(folder)
    elif real.loader == "clip":
        CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    elif model_id == "sdxl-base":
        for sub in ("tokenizer", "tokenizer_2"):
            write_tiny_tokenizer(folder / sub)
        EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                               timestep_spacing="leading").save_pretrained(folder / "scheduler")
        RELEASED_FILES["sdxl-lightning-4step"].build(tiny_config("sdxl-lightning-4step")).save_config(folder / "unet")
    return tiny_spec(real, folder), written
