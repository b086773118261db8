"""CLIP similarity between the input photo and rendered views (transformers ``CLIPModel``).

Definition (DESIGN.md, as DreamGaussian reports it): the mean over views of the cosine similarity between the
CLIP image embedding of the photo and that of each view; both composited on white. Only computed when the
weights are on this machine: :func:`clip_similarity_or_none` returns None otherwise, never a made-up number.
Device: CUDA in fp16 where present, else CPU fp32.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from glimpse3d_core.backends.located import LocatedImageModel
from glimpse3d_core.models.loading import from_pretrained_strict, inference_dtype
from glimpse3d_core.models.registry import ModelSpec
from glimpse3d_core.models.store import ModelStore, Status

DEFAULT_MODEL = "clip-vit-base-patch32"
log = logging.getLogger(__name__)


def load_clip(spec: ModelSpec, root: str, device: torch.device,
              dtype: torch.dtype | None = None) -> tuple[torch.nn.Module, object]:
    """(CLIPModel, CLIPImageProcessor) from a located folder, strictly; ``dtype`` defaults to
    :func:`inference_dtype` of the device."""
    from transformers import CLIPImageProcessor, CLIPModel

    model = from_pretrained_strict(spec.id, CLIPModel, root, dtype=dtype or inference_dtype(device))
    return model.to(device).eval(), CLIPImageProcessor.from_pretrained(root, local_files_only=True)


class ClipSimilarity(LocatedImageModel):
    """Cosine similarities between CLIP image embeddings."""

    name = "clip"
    default_model = DEFAULT_MODEL
    loader = staticmethod(load_clip)

    @torch.inference_mode()
    def embed(self, images: np.ndarray) -> torch.Tensor:
        """Unit-norm image embeddings [N,D] of images [N,H,W,3] float in [0,1] (already composited)."""
        if images.ndim != 4 or images.shape[-1] != 3 or len(images) == 0:
            raise ValueError(f"expected images [N,H,W,3], got {images.shape}")
        if not np.isfinite(images).all():
            raise ValueError("images contain NaN or infinite values")
        inputs = self.processor(images=list(np.clip(images, 0.0, 1.0).astype(np.float32)), return_tensors="pt",
                                do_rescale=False)
        pixels = inputs["pixel_values"].to(self.device, dtype=next(self.model.parameters()).dtype)
        features = self.model.get_image_features(pixel_values=pixels)
        if not isinstance(features, torch.Tensor):  # transformers 5 may return a model output
            features = features.pooler_output
        features = features.float()
        return features / features.norm(dim=-1, keepdim=True)

    def per_view(self, photo: np.ndarray, views: np.ndarray) -> np.ndarray:
        """Cosine similarity [C] of each view [C,H,W,3] to the photo [H,W,3]."""
        reference = self.embed(photo[None])
        return (self.embed(views) @ reference[0]).cpu().numpy()

    def __call__(self, photo: np.ndarray, views: np.ndarray) -> float:
        """Mean cosine similarity of the views to the photo."""
        return float(self.per_view(photo, views).mean())


def clip_similarity_or_none(photo: np.ndarray, views: np.ndarray, model: str = DEFAULT_MODEL,
                            store: ModelStore | None = None, device: str | torch.device = "cpu") -> float | None:
    """Mean CLIP similarity, or None (logged) when the CLIP weights are absent. Broken weights still raise."""
    store = store or ModelStore()
    if store.status(model).status in (Status.MISSING, Status.INCOMPLETE):
        log.info("CLIP similarity skipped: model %s is not on this machine", model)
        return None
    return ClipSimilarity(model, store, device)(photo, views)
