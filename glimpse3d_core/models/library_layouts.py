"""The released weight files of the library-backed models: their config.json values and how to build each
architecture (transformers / diffusers) from them.

One :class:`ReleasedFile` per weight file of a registry model that a library class loads. ``config`` holds the
values of the released config.json that shape the weights (full size); the released files themselves cannot be
downloaded here, so their key lists (``layouts/<name>.json``, written by ``research/make_released_layouts.py``)
are *derived*: the architecture built from these values on the meta device, minus the keys the released file is
known to leave out (``omits_allowed_missing``, :mod:`glimpse3d_core.models.released`). Evidence that the values
are the released ones: for every file the parameter count times the bytes per value (``dtype``) agrees with the
size the registry lists for the file (``tests/test_library_layouts.py``).

The same configs build the full-size random models of ``research/gpu_models.py``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch

DPT_LARGE: dict[str, Any] = {
    "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096,
    "image_size": 384, "patch_size": 16, "num_channels": 3, "qkv_bias": True, "readout_type": "project",
    "backbone_out_indices": [5, 11, 17, 23], "reassemble_factors": [4, 2, 1, 0.5],
    "neck_hidden_sizes": [256, 512, 1024, 1024], "fusion_hidden_size": 256, "head_in_index": -1,
    "use_batch_norm_in_fusion_residual": False,
}
"""Intel/dpt-large config.json."""
DPT_HYBRID_MIDAS: dict[str, Any] = {
    "is_hybrid": True, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
    "intermediate_size": 3072, "image_size": 384, "patch_size": 16, "num_channels": 3, "qkv_bias": True,
    "readout_type": "project", "backbone_out_indices": [2, 5, 8, 11], "reassemble_factors": [1, 1, 1, 0.5],
    "neck_hidden_sizes": [256, 512, 768, 768], "fusion_hidden_size": 256, "head_in_index": -1,
    "use_batch_norm_in_fusion_residual": False, "backbone_featmap_shape": [1, 1024, 24, 24],
    "neck_ignore_stages": [0, 1],
    "backbone_config": {"model_type": "bit", "layer_type": "bottleneck", "global_padding": "SAME",
                        "depths": [3, 4, 9], "hidden_sizes": [256, 512, 1024, 2048], "embedding_size": 64,
                        "embedding_dynamic_padding": True, "out_features": ["stage1", "stage2", "stage3"]},
}
"""Intel/dpt-hybrid-midas config.json."""
CLIP_VIT_B32: dict[str, Any] = {
    "projection_dim": 512,
    "text_config": {"vocab_size": 49408, "max_position_embeddings": 77, "hidden_size": 512,
                    "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 8},
    "vision_config": {"image_size": 224, "patch_size": 32, "hidden_size": 768, "intermediate_size": 3072,
                      "num_hidden_layers": 12, "num_attention_heads": 12},
}
"""openai/clip-vit-base-patch32 config.json."""
CLIP_VIT_L14: dict[str, Any] = {
    "projection_dim": 768,
    "text_config": {"vocab_size": 49408, "max_position_embeddings": 77, "hidden_size": 768,
                    "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12},
    "vision_config": {"image_size": 224, "patch_size": 14, "hidden_size": 1024, "intermediate_size": 4096,
                      "num_hidden_layers": 24, "num_attention_heads": 16},
}
"""openai/clip-vit-large-patch14 config.json."""
SDXL_TEXT_ENCODER: dict[str, Any] = {
    "vocab_size": 49408, "max_position_embeddings": 77, "hidden_size": 768, "intermediate_size": 3072,
    "num_hidden_layers": 12, "num_attention_heads": 12, "hidden_act": "quick_gelu", "projection_dim": 768,
}
"""stabilityai/stable-diffusion-xl-base-1.0 text_encoder/config.json (OpenAI CLIP ViT-L/14's text tower)."""
SDXL_TEXT_ENCODER_2: dict[str, Any] = {
    "vocab_size": 49408, "max_position_embeddings": 77, "hidden_size": 1280, "intermediate_size": 5120,
    "num_hidden_layers": 32, "num_attention_heads": 20, "hidden_act": "gelu", "projection_dim": 1280,
}
"""stabilityai/stable-diffusion-xl-base-1.0 text_encoder_2/config.json (OpenCLIP ViT-bigG/14's text tower)."""
SDXL_UNET: dict[str, Any] = {
    "sample_size": 128, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": [320, 640, 1280], "transformer_layers_per_block": [1, 2, 10],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "attention_head_dim": [5, 10, 20], "use_linear_projection": True, "cross_attention_dim": 2048,
    "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816, "norm_num_groups": 32,
}
"""stabilityai/stable-diffusion-xl-base-1.0 unet/config.json (the Lightning UNet has SDXL base's architecture)."""
SDXL_VAE: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
    "block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4, "norm_num_groups": 32, "sample_size": 512,
    "scaling_factor": 0.13025, "force_upcast": False,
}
"""madebyollin/sdxl-vae-fp16-fix config.json."""
SDXL_DEPTH_CONTROLNET: dict[str, Any] = {
    **{k: SDXL_UNET[k] for k in ("in_channels", "layers_per_block", "block_out_channels",
                                 "transformer_layers_per_block", "down_block_types", "attention_head_dim",
                                 "use_linear_projection", "cross_attention_dim", "addition_embed_type",
                                 "addition_time_embed_dim", "projection_class_embeddings_input_dim",
                                 "norm_num_groups")},
    "conditioning_channels": 3, "conditioning_embedding_out_channels": [16, 32, 96, 256],
}
"""diffusers/controlnet-depth-sdxl-1.0 config.json: SDXL base's encoder half (as diffusers' ControlNet training
script writes it with ``ControlNetModel.from_unet``) plus the conditioning embedding."""


@dataclass(frozen=True)
class ReleasedFile:
    """One released weight file: registry ``model_id``, its ``weights`` path in the model folder (and the
    repository), the library class that loads it and the released ``config`` values (``config_source``)."""

    name: str
    model_id: str
    weights: str
    library: Literal["transformers", "diffusers"]
    cls: str
    config: Mapping[str, Any]
    config_source: str
    dtype: Literal["float16", "float32"]
    omits_allowed_missing: bool = False
    """Whether the released file leaves out the keys :data:`~glimpse3d_core.models.released.ALLOWED_MISSING`
    lists for its model (otherwise the file is taken to hold them)."""

    @property
    def bytes_per_value(self) -> int:
        return 2 if self.dtype == "float16" else 4

    def build(self, config: Mapping[str, Any] | None = None, device: str | torch.device = "meta") -> torch.nn.Module:
        """The architecture from ``config`` (default: the released values) with uninitialised weights on
        ``device`` (meta: no memory). Another config with the same block structure gives the same key names."""
        values = copy.deepcopy(dict(self.config if config is None else config))
        with torch.device(device):
            if self.library == "diffusers":
                import diffusers

                return getattr(diffusers, self.cls)(**values)
            import transformers

            model_cls = getattr(transformers, self.cls)
            return model_cls(model_cls.config_class(**values))


_HF = "hf:"
RELEASED_FILES: dict[str, ReleasedFile] = {f.name: f for f in (
    ReleasedFile("dpt-large", "dpt-large", "model.safetensors", "transformers", "DPTForDepthEstimation", DPT_LARGE,
                 _HF + "Intel/dpt-large config.json", "float32", omits_allowed_missing=True),
    ReleasedFile("dpt-hybrid-midas", "dpt-hybrid-midas", "model.safetensors", "transformers",
                 "DPTForDepthEstimation", DPT_HYBRID_MIDAS,
                 _HF + "Intel/dpt-hybrid-midas config.json (the values transformers' convert_dpt_hybrid_to_pytorch.py "
                 "sets; BiT backbone as in that config's copy sd2-community/stable-diffusion-2-depth "
                 "depth_estimator/config.json)", "float32"),
    ReleasedFile("clip-vit-base-patch32", "clip-vit-base-patch32", "model.safetensors", "transformers", "CLIPModel",
                 CLIP_VIT_B32, _HF + "openai/clip-vit-base-patch32 config.json", "float32"),
    ReleasedFile("clip-vit-large-patch14", "clip-vit-large-patch14", "model.safetensors", "transformers",
                 "CLIPModel", CLIP_VIT_L14, _HF + "openai/clip-vit-large-patch14 config.json", "float32"),
    ReleasedFile("sdxl-base.text_encoder", "sdxl-base", "text_encoder/model.fp16.safetensors", "transformers",
                 "CLIPTextModel", SDXL_TEXT_ENCODER,
                 _HF + "stabilityai/stable-diffusion-xl-base-1.0 text_encoder/config.json", "float16"),
    ReleasedFile("sdxl-base.text_encoder_2", "sdxl-base", "text_encoder_2/model.fp16.safetensors", "transformers",
                 "CLIPTextModelWithProjection", SDXL_TEXT_ENCODER_2,
                 _HF + "stabilityai/stable-diffusion-xl-base-1.0 text_encoder_2/config.json", "float16"),
    ReleasedFile("sdxl-lightning-4step", "sdxl-lightning-4step", "sdxl_lightning_4step_unet.safetensors",
                 "diffusers", "UNet2DConditionModel", SDXL_UNET,
                 _HF + "stabilityai/stable-diffusion-xl-base-1.0 unet/config.json (the SDXL-Lightning model card "
                 "loads the file into UNet2DConditionModel.from_config of it)", "float16"),
    ReleasedFile("sdxl-vae-fp16-fix", "sdxl-vae-fp16-fix", "diffusion_pytorch_model.safetensors", "diffusers",
                 "AutoencoderKL", SDXL_VAE, _HF + "madebyollin/sdxl-vae-fp16-fix config.json", "float32"),
    ReleasedFile("controlnet-depth-sdxl", "controlnet-depth-sdxl", "diffusion_pytorch_model.fp16.safetensors",
                 "diffusers", "ControlNetModel", SDXL_DEPTH_CONTROLNET,
                 _HF + "diffusers/controlnet-depth-sdxl-1.0 config.json (the SDXL ControlNet values diffusers' "
                 "SDXL ControlNets share, e.g. diffusers/controlnet-canny-sdxl-1.0)", "float16"),
)}
"""Layout name -> released file. The small depth ControlNet (controlnet-depth-sdxl-small) has none: its
config.json values are not known here."""
