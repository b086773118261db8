"""DINO ViT-B/16 image tokenizer (TripoSR ``DINOSingleImageTokenizer``) on top of transformers' ViTModel.

Input: images [B,3,H,W] in [0,1] (already composited on grey and resized); they are ImageNet-normalised here.
Output: the last hidden state [B, 1 + (H/16)(W/16), hidden] (CLS token first), the backbone's cross-attention
context. ``pooler`` exists only because the checkpoint holds it (TripoSR built ViTModel with its default
``add_pooling_layer=True``); its output is unused.

Key names: TripoSR's checkpoint was written with transformers < 5, whose ViT modules are
``encoder.layer.N.attention.attention.query`` etc.; transformers 5 renamed them (``layers.N.attention.q_proj``).
:func:`checkpoint_name` maps whichever naming the installed transformers uses to the checkpoint's.

Position embeddings: the checkpoint's are for 14x14 patches and are resized bicubically to the input's grid the
way transformers 4.35 (TripoSR's version) did it: ``scale_factor = (grid + 0.1) / 14`` (DINO's offset against
rounding), not today's ``size=grid``. The sampling positions differ slightly; we keep the trained behaviour.
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn
from transformers import ViTConfig, ViTModel
from transformers.models.vit.modeling_vit import ViTEmbeddings

from glimpse3d_core.models.triposr.config import ViTConfigValues

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

POSITION_GRID_OFFSET = 0.1
"""transformers<5 / DINO: added to the target patch grid when computing the bicubic scale factor."""

# (transformers < 5 name, transformers >= 5 name) of each renamed ViT sub-module, {n} = layer index.
_RENAMED_MODULES = (
    ("encoder.layer.{n}.attention.attention.query", "layers.{n}.attention.q_proj"),
    ("encoder.layer.{n}.attention.attention.key", "layers.{n}.attention.k_proj"),
    ("encoder.layer.{n}.attention.attention.value", "layers.{n}.attention.v_proj"),
    ("encoder.layer.{n}.attention.output.dense", "layers.{n}.attention.o_proj"),
    ("encoder.layer.{n}.intermediate.dense", "layers.{n}.mlp.fc1"),
    ("encoder.layer.{n}.output.dense", "layers.{n}.mlp.fc2"),
    ("encoder.layer.{n}.layernorm_before", "layers.{n}.layernorm_before"),
    ("encoder.layer.{n}.layernorm_after", "layers.{n}.layernorm_after"),
)
_NEW_TO_OLD = [
    (re.compile("^" + re.escape(new).replace(re.escape("{n}"), r"(?P<n>\d+)") + r"\.(?P<param>\w+)$"), old)
    for old, new in _RENAMED_MODULES
]


def checkpoint_name(installed_name: str) -> str:
    """The transformers<5 (checkpoint) name of a ViTModel state-dict key of the installed transformers.

    Names that were never renamed (embeddings, final layernorm, pooler), and every name under transformers < 5,
    come back unchanged.
    """
    for pattern, old in _NEW_TO_OLD:
        match = pattern.match(installed_name)
        if match:
            return old.format(n=match["n"]) + "." + match["param"]
    return installed_name


class _TrainedPositionEmbeddings(ViTEmbeddings):
    """ViTEmbeddings whose position-embedding resize is the one TripoSR was trained with (see module doc)."""

    def interpolate_pos_encoding(self, embeddings: torch.Tensor, height: int, width: int) -> torch.Tensor:
        num_positions = self.position_embeddings.shape[1] - 1
        side = math.isqrt(num_positions)
        grid_h, grid_w = height // self.patch_size, width // self.patch_size
        if grid_h * grid_w == num_positions and height == width:
            return self.position_embeddings
        dim = embeddings.shape[-1]
        patch = self.position_embeddings[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
        scale = ((grid_h + POSITION_GRID_OFFSET) / side, (grid_w + POSITION_GRID_OFFSET) / side)
        patch = nn.functional.interpolate(patch.float(), scale_factor=scale, mode="bicubic", align_corners=False)
        if patch.shape[-2:] != (grid_h, grid_w):
            raise RuntimeError(f"position embeddings resized to {tuple(patch.shape[-2:])}, not {(grid_h, grid_w)}")
        patch = patch.to(self.position_embeddings.dtype).permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)
        return torch.cat([self.position_embeddings[:, :1], patch], dim=1)


def vit_config(values: ViTConfigValues) -> ViTConfig:
    """transformers ViTConfig for ``values`` (dropouts 0, SDPA attention)."""
    config = ViTConfig(
        hidden_size=values.hidden_size,
        num_hidden_layers=values.num_hidden_layers,
        num_attention_heads=values.num_attention_heads,
        intermediate_size=values.intermediate_size,
        hidden_act=values.hidden_act,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        layer_norm_eps=values.layer_norm_eps,
        image_size=values.image_size,
        patch_size=values.patch_size,
        num_channels=3,
        qkv_bias=values.qkv_bias,
    )
    config._attn_implementation = "sdpa"
    return config


class DinoImageTokenizer(nn.Module):
    """Images [B,3,H,W] in [0,1] -> DINO tokens [B, 1 + H*W/patch², hidden]. H and W must be multiples of the
    patch size."""

    def __init__(self, values: ViTConfigValues) -> None:
        super().__init__()
        self.values = values
        config = vit_config(values)
        self.model = ViTModel(config, add_pooling_layer=True)
        self.model.embeddings = _TrainedPositionEmbeddings(config)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B,3,H,W], got {tuple(images.shape)}")
        mean = torch.tensor(IMAGENET_MEAN, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        weight = self.model.embeddings.patch_embeddings.projection.weight
        pixels = ((images - mean) / std).to(weight.dtype)
        return self.model(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state
