"""OpenAI CLIP as SyncDreamer holds it (``clip_image_encoder.model``): the ViT image tower in use, and the text-side
tensors the checkpoint still carries (SyncDreamer deletes only the text transformer). Those leftovers are never
used; they exist so that the released state dict loads strictly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glimpse3d_core.models.syncdreamer.config import CLIPConfig
from glimpse3d_core.models.syncdreamer.layers import LayerNorm32, attention

QUICK_GELU_ALPHA = 1.702
MLP_RATIO = 4


class MultiheadSelfAttention(nn.Module):
    """Self-attention with torch.nn.MultiheadAttention's parameter names (packed ``in_proj_weight``)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        return self.out_proj(attention(q, k, v, self.heads))


class MLP(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, width * MLP_RATIO)
        self.c_proj = nn.Linear(width * MLP_RATIO, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)
        return self.c_proj(h * torch.sigmoid(QUICK_GELU_ALPHA * h))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = MultiheadSelfAttention(width, heads)
        self.ln_1 = LayerNorm32(width)
        self.mlp = MLP(width)
        self.ln_2 = LayerNorm32(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.resblocks = nn.Sequential(*(ResidualAttentionBlock(width, heads) for _ in range(layers)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resblocks(x)


class VisionTransformer(nn.Module):
    """Patchify (conv without bias), prepend the class token, add positions, ln_pre, transformer, ln_post on the
    class token, project: [B,3,R,R] normalised image -> [B, embed_dim]."""

    def __init__(self, cfg: CLIPConfig) -> None:
        super().__init__()
        width, grid = cfg.vision_width, cfg.image_resolution // cfg.patch_size
        scale = width**-0.5
        self.conv1 = nn.Conv2d(3, width, cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + 1, width))
        self.ln_pre = LayerNorm32(width)
        self.transformer = Transformer(width, cfg.vision_layers, cfg.vision_heads)
        self.ln_post = LayerNorm32(width)
        self.proj = nn.Parameter(scale * torch.randn(width, cfg.embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x.to(self.conv1.weight.dtype)).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0]) @ self.proj


class CLIP(nn.Module):
    """``visual`` plus the unused text-side tensors kept by the checkpoint."""

    def __init__(self, cfg: CLIPConfig) -> None:
        super().__init__()
        self.visual = VisionTransformer(cfg)
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.text_width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.text_width))
        self.ln_final = LayerNorm32(cfg.text_width)
        self.text_projection = nn.Parameter(torch.empty(cfg.text_width, cfg.embed_dim))
        self.logit_scale = nn.Parameter(torch.zeros(()))
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=cfg.text_width**-0.5)


class CLIPImageEncoder(nn.Module):
    """SyncDreamer's FrozenCLIPImageEmbedder: image in [-1, 1] -> CLIP image embedding [B, 1, embed_dim] (float32).

    Pre-processing as the original: bicubic resize to the CLIP resolution (align_corners=True, no antialias),
    map to [0, 1], normalise with CLIP's mean/std.
    """

    def __init__(self, cfg: CLIPConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = CLIP(cfg)

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        size = self.cfg.image_resolution
        x = F.interpolate(image.float(), size=(size, size), mode="bicubic", align_corners=True)
        mean = torch.tensor(self.cfg.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.cfg.std, device=x.device).view(1, 3, 1, 1)
        return ((x + 1.0) / 2.0 - mean) / std

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.visual(self.preprocess(image)).float().unsqueeze(1)
