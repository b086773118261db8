"""The TripoSR network: conditioning image -> triplane scene code, with the released checkpoint's key names.

Parts (attribute names = the checkpoint's top-level prefixes): ``image_tokenizer`` (DINO ViT-B/16),
``tokenizer`` (learned triplane tokens), ``backbone`` (Transformer1D), ``post_processor`` (upsampler),
``decoder`` (NeRF MLP). The renderer holds no weights: :meth:`TripoSR.field` gives one for the scene codes.

Checkpoint names equal this module's state-dict names except inside the ViT, where the installed transformers
may use its newer module names (:func:`.image_tokenizer.checkpoint_name`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from glimpse3d_core.models.triposr.backbone import Transformer1D
from glimpse3d_core.models.triposr.config import TripoSRConfig
from glimpse3d_core.models.triposr.decoder import NeRFDecoder
from glimpse3d_core.models.triposr.image_tokenizer import DinoImageTokenizer, checkpoint_name
from glimpse3d_core.models.triposr.renderer import DEFAULT_CHUNK_POINTS, TriplaneField
from glimpse3d_core.models.triposr.triplane import TriplaneTokenizer, TriplaneUpsampler

_VIT_PREFIX = "image_tokenizer.model."
_REPORTED_NAMES = 5


class CheckpointMismatchError(ValueError):
    """A state dict whose keys or shapes differ from the architecture's."""


def checkpoint_key(module_key: str) -> str:
    """The checkpoint name of one of :class:`TripoSR`'s state-dict keys."""
    if module_key.startswith(_VIT_PREFIX):
        return _VIT_PREFIX + checkpoint_name(module_key.removeprefix(_VIT_PREFIX))
    return module_key


class TripoSR(nn.Module):
    """images [B,3,S,S] in [0,1] (pre-processed, S = ``cond_image_size``) -> planes [B, 3, C, 2P, 2P]."""

    def __init__(self, config: TripoSRConfig) -> None:
        super().__init__()
        self.config = config
        self.image_tokenizer = DinoImageTokenizer(config.image_tokenizer)
        self.tokenizer = TriplaneTokenizer(config.tokenizer)
        self.backbone = Transformer1D(config.backbone)
        self.post_processor = TriplaneUpsampler(config.post_processor)
        self.decoder = NeRFDecoder(config.decoder)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        context = self.image_tokenizer(images)
        tokens = self.tokenizer(images.shape[0]).to(context.dtype)
        tokens = self.backbone(tokens, context)
        return self.post_processor(self.tokenizer.detokenize(tokens))

    def field(self, chunk_points: int = DEFAULT_CHUNK_POINTS) -> TriplaneField:
        """The NeRF field/renderer that reads this model's scene codes through its decoder's configuration."""
        return TriplaneField(self.config.renderer, chunk_points)

    def checkpoint_state_dict(self) -> dict[str, torch.Tensor]:
        """The state dict under the released checkpoint's key names."""
        return {checkpoint_key(k): v for k, v in self.state_dict().items()}

    def load_checkpoint_state_dict(self, state_dict: Mapping[str, torch.Tensor], assign: bool = False) -> None:
        """Load a state dict keyed by checkpoint names, strictly: every key present, none extra, shapes equal.

        ``assign=True`` adopts the given tensors (use it for a model built on the meta device).
        """
        expected = {checkpoint_key(k): (k, v.shape) for k, v in self.state_dict().items()}
        missing = sorted(expected.keys() - state_dict.keys())
        unexpected = sorted(state_dict.keys() - expected.keys())
        wrong_shape = sorted(
            f"{k} {tuple(state_dict[k].shape)} != {tuple(shape)}"
            for k, (_, shape) in expected.items()
            if k in state_dict and state_dict[k].shape != shape
        )
        problems = [
            f"{label} ({len(names)}): " + ", ".join(names[:_REPORTED_NAMES]) + (" ..." * (len(names) > _REPORTED_NAMES))
            for label, names in (("missing", missing), ("unexpected", unexpected), ("shape", wrong_shape))
            if names
        ]
        if problems:
            raise CheckpointMismatchError("state dict does not fit TripoSR: " + "; ".join(problems))
        renamed = {module_key: state_dict[k] for k, (module_key, _) in expected.items()}
        self.load_state_dict(renamed, strict=True, assign=assign)


def build_for_layout() -> dict[str, torch.Tensor]:
    """The released architecture built on the meta device: its checkpoint-named state dict (no memory used)."""
    with torch.device("meta"):
        model = TripoSR(TripoSRConfig())
    return model.checkpoint_state_dict()
