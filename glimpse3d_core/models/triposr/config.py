"""TripoSR configuration: mirrors stabilityai/TripoSR ``config.yaml`` plus the DINO ViT-B/16 architecture.

The released ``config.yaml`` names each part by its original class (``*_cls``) and gives its settings; the
DINO config (facebook/dino-vitb16 ``config.json``) is fixed here, since the checkpoint holds the ViT weights and
we never reach the hub. :meth:`TripoSRConfig.from_yaml_dict` reads the released file, refusing classes or
settings this implementation does not provide. :meth:`TripoSRConfig.tiny` is a small variant (same code path)
for tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

_FROZEN = ConfigDict(frozen=True, extra="forbid")

DINO_HUB_NAME = "facebook/dino-vitb16"

ORIGINAL_CLASSES = {
    "image_tokenizer_cls": "tsr.models.tokenizers.image.DINOSingleImageTokenizer",
    "tokenizer_cls": "tsr.models.tokenizers.triplane.Triplane1DTokenizer",
    "backbone_cls": "tsr.models.transformer.transformer_1d.Transformer1D",
    "post_processor_cls": "tsr.models.network_utils.TriplaneUpsampleNetwork",
    "decoder_cls": "tsr.models.network_utils.NeRFMLP",
    "renderer_cls": "tsr.models.nerf_renderer.TriplaneNeRFRenderer",
}
"""The original class of each part in config.yaml; the only ones this implementation reproduces."""


class ConfigFileError(ValueError):
    """A TripoSR config.yaml that cannot be read or describes an architecture we do not implement."""


class ViTConfigValues(BaseModel):
    """DINO ViT-B/16 (facebook/dino-vitb16 config.json): the image tokenizer's transformers ViTConfig values."""

    model_config = _FROZEN

    hidden_size: int = Field(768, ge=1)
    num_hidden_layers: int = Field(12, ge=1)
    num_attention_heads: int = Field(12, ge=1)
    intermediate_size: int = Field(3072, ge=1)
    patch_size: int = Field(16, ge=1)
    image_size: int = Field(224, ge=1, description="size the position embeddings were trained at (14x14 patches)")
    layer_norm_eps: float = 1e-12
    qkv_bias: bool = True
    hidden_act: str = "gelu"

    @model_validator(mode="after")
    def _check(self) -> ViTConfigValues:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} not divisible by {self.num_attention_heads} heads")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} not a multiple of patch_size {self.patch_size}")
        return self


class TriplaneTokenizerConfig(BaseModel):
    """Learned triplane tokens: 3 planes of ``plane_size``² tokens with ``num_channels`` channels."""

    model_config = _FROZEN

    plane_size: int = Field(32, ge=1)
    num_channels: int = Field(1024, ge=1)


class BackboneConfig(BaseModel):
    """Transformer1D: GroupNorm, proj_in, pre-norm blocks (self-attn, cross-attn, GEGLU FF), proj_out, residual."""

    model_config = _FROZEN

    in_channels: int = Field(1024, ge=1)
    num_attention_heads: int = Field(16, ge=1)
    attention_head_dim: int = Field(64, ge=1)
    num_layers: int = Field(16, ge=1)
    cross_attention_dim: int = Field(768, ge=1)
    norm_num_groups: int = Field(32, ge=1)
    attention_bias: bool = False
    activation_fn: Literal["geglu"] = "geglu"
    norm_type: Literal["layer_norm"] = "layer_norm"
    dropout: float = Field(0.0, ge=0.0, le=0.0, description="inference only")

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @model_validator(mode="after")
    def _check(self) -> BackboneConfig:
        if self.in_channels % self.norm_num_groups:
            raise ValueError(f"in_channels {self.in_channels} not divisible by {self.norm_num_groups} groups")
        return self


class UpsamplerConfig(BaseModel):
    """TriplaneUpsampleNetwork: a 2x2 stride-2 transposed convolution per plane."""

    model_config = _FROZEN

    in_channels: int = Field(1024, ge=1)
    out_channels: int = Field(40, ge=1)


class DecoderConfig(BaseModel):
    """NeRFMLP: ``in_channels`` -> ``n_hidden_layers`` x ``n_neurons`` -> 4 (density, 3 colour features)."""

    model_config = _FROZEN

    in_channels: int = Field(120, ge=1)
    n_neurons: int = Field(64, ge=1)
    n_hidden_layers: int = Field(9, ge=1)
    activation: Literal["silu", "relu"] = "silu"
    bias: bool = True


class RendererConfig(BaseModel):
    """TriplaneNeRFRenderer. Points in [-radius, radius]³ (TripoSR frame) map to the planes' [-1, 1]²."""

    model_config = _FROZEN

    radius: float = Field(0.87, gt=0)
    feature_reduction: Literal["concat", "mean"] = "concat"
    density_activation: Literal["exp", "trunc_exp"] = Field(
        "exp", description="both are exp in the forward pass (trunc_exp only clamps the gradient)"
    )
    density_bias: float = -1.0
    color_activation: Literal["sigmoid"] = "sigmoid"
    num_samples_per_ray: int = Field(128, ge=1)
    randomized: Literal[False] = False


class TripoSRConfig(BaseModel):
    """The whole model; field names follow config.yaml (without the ``*_cls`` entries)."""

    model_config = _FROZEN

    cond_image_size: int = Field(512, ge=16, description="side of the square conditioning image in pixels")
    image_tokenizer: ViTConfigValues = ViTConfigValues()
    tokenizer: TriplaneTokenizerConfig = TriplaneTokenizerConfig()
    backbone: BackboneConfig = BackboneConfig()
    post_processor: UpsamplerConfig = UpsamplerConfig()
    decoder: DecoderConfig = DecoderConfig()
    renderer: RendererConfig = RendererConfig()

    @model_validator(mode="after")
    def _check_widths(self) -> TripoSRConfig:
        vit, tok, bb, up, dec = self.image_tokenizer, self.tokenizer, self.backbone, self.post_processor, self.decoder
        planes_in = 3 * up.out_channels if self.renderer.feature_reduction == "concat" else up.out_channels
        checks = [
            (bb.cross_attention_dim == vit.hidden_size, "backbone.cross_attention_dim != ViT hidden_size"),
            (bb.in_channels == tok.num_channels, "backbone.in_channels != tokenizer.num_channels"),
            (up.in_channels == tok.num_channels, "post_processor.in_channels != tokenizer.num_channels"),
            (dec.in_channels == planes_in, f"decoder.in_channels must be {planes_in} for the plane features"),
            (self.cond_image_size % vit.patch_size == 0, "cond_image_size must be a multiple of the patch size"),
        ]
        errors = [message for ok, message in checks if not ok]
        if errors:
            raise ValueError("; ".join(errors))
        return self

    @classmethod
    def tiny(cls) -> TripoSRConfig:
        """A few-layer, narrow variant that runs image -> mesh on a CPU in about a second (for tests)."""
        return cls(
            cond_image_size=64,
            image_tokenizer=ViTConfigValues(
                hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=48
            ),
            tokenizer=TriplaneTokenizerConfig(plane_size=8, num_channels=32),
            backbone=BackboneConfig(
                in_channels=32, num_attention_heads=2, attention_head_dim=16, num_layers=2,
                cross_attention_dim=32, norm_num_groups=8,
            ),
            post_processor=UpsamplerConfig(in_channels=32, out_channels=8),
            decoder=DecoderConfig(in_channels=24, n_neurons=16, n_hidden_layers=3),
            renderer=RendererConfig(num_samples_per_ray=16),
        )

    @classmethod
    def from_yaml_dict(cls, raw: dict[str, Any]) -> TripoSRConfig:
        """Validate a parsed TripoSR config.yaml: every ``*_cls`` must name the original class. The image
        tokenizer is either ``{pretrained_model_name_or_path: facebook/dino-vitb16}`` (as released; its
        architecture is :class:`ViTConfigValues`' defaults) or, our extension, explicit ViTConfigValues fields."""
        if not isinstance(raw, dict):
            raise ConfigFileError(f"config.yaml must hold a mapping, got {type(raw).__name__}")
        raw = dict(raw)
        for key, expected in ORIGINAL_CLASSES.items():
            got = raw.pop(key, expected)
            if got != expected:
                raise ConfigFileError(f"config.yaml {key}={got!r}: only {expected!r} is implemented")
        tokenizer = dict(raw.get("image_tokenizer") or {})
        if "pretrained_model_name_or_path" in tokenizer:
            if tokenizer != {"pretrained_model_name_or_path": DINO_HUB_NAME}:
                raise ConfigFileError(f"config.yaml image_tokenizer {tokenizer}: only {DINO_HUB_NAME} is known")
            raw["image_tokenizer"] = {}
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise ConfigFileError(f"config.yaml does not describe a supported TripoSR: {exc}") from exc

    @classmethod
    def from_yaml(cls, path: str | Path) -> TripoSRConfig:
        """Read and validate a TripoSR ``config.yaml``."""
        try:
            raw = yaml.safe_load(Path(path).read_text())
        except yaml.YAMLError as exc:
            raise ConfigFileError(f"{path} is not valid YAML: {exc}") from exc
        return cls.from_yaml_dict(raw)

    def to_yaml_dict(self) -> dict[str, Any]:
        """The config.yaml form (with the ``*_cls`` entries) that :meth:`from_yaml_dict` reads back."""
        out: dict[str, Any] = {"cond_image_size": self.cond_image_size}
        out["image_tokenizer_cls"] = ORIGINAL_CLASSES["image_tokenizer_cls"]
        released = self.image_tokenizer == ViTConfigValues()
        out["image_tokenizer"] = (
            {"pretrained_model_name_or_path": DINO_HUB_NAME} if released else self.image_tokenizer.model_dump()
        )
        for part in ("tokenizer", "backbone", "post_processor", "decoder", "renderer"):
            out[f"{part}_cls"] = ORIGINAL_CLASSES[f"{part}_cls"]
            out[part] = getattr(self, part).model_dump()
        return out
