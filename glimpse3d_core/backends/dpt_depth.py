"""Depth backend: MiDaS / DPT through transformers ``DPTForDepthEstimation``.

MiDaS predicts *relative inverse* depth (disparity-like: larger = nearer), defined up to scale and shift. Our
:class:`~glimpse3d_core.types.DepthMap` convention is the opposite (larger = farther), so the prediction is
flipped, not left as is (the upstream project forgot this). Over the foreground, with robust end points
``lo``/``hi`` (the :data:`ROBUST_QUANTILES` of the disparity),
``depth = NEAR + clip((hi - disparity) / (hi - lo), 0, 1)``: the nearest foreground point has depth ``NEAR``
(1), the farthest ``NEAR + 1`` (2); a flat prediction gives ``NEAR`` everywhere; background 0 with ``valid``
False. The flip is affine because an affine-ambiguous disparity has no meaningful reciprocal; over an object's
small depth range disparity is close to affine in depth anyway.

The photo is composited on white (the object is all the model should see), resized by the model's own image
processor, and the prediction is resized back bicubically. Device and dtype: the run context's (by default fp16
on CUDA, fp32 on CPU).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from glimpse3d_core.backends.base import Backend, BackendSettings, RunContext, register
from glimpse3d_core.backends.located import LocatedImageModel
from glimpse3d_core.models.loading import from_pretrained_strict, inference_dtype
from glimpse3d_core.models.registry import ModelSpec
from glimpse3d_core.types import DepthMap, ObjectImage

DEFAULT_MODEL = "dpt-hybrid-midas"
NEAR = 1.0
"""Relative depth given to the nearest foreground point (the farthest gets NEAR + 1)."""
ROBUST_QUANTILES = (0.01, 0.99)
FOREGROUND_ALPHA = 0.5
BACKGROUND = 1.0
"""Grey level the photo is composited on before the model sees it (white)."""


class DptSettings(BackendSettings):
    """Depth backend ``dpt``: which DPT model to run."""

    name: Literal["dpt"] = "dpt"
    model: str = Field(DEFAULT_MODEL, description="registry id: dpt-hybrid-midas or dpt-large")


def disparity_to_relative_depth(disparity: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Flip a relative inverse depth (larger = nearer) into our relative depth (larger = farther).

    See the module docstring for the exact mapping; ``valid`` [H,W] bool marks the foreground.
    """
    if not valid.any():
        raise ValueError("depth needs a foreground: the mask is empty")
    disparity = disparity.astype(np.float64)
    lo, hi = np.quantile(disparity[valid], ROBUST_QUANTILES)
    if not hi > lo:  # a flat prediction: every foreground pixel at the same depth
        return np.where(valid, NEAR, 0.0).astype(np.float32)
    depth = NEAR + np.clip((hi - disparity) / (hi - lo), 0.0, 1.0)
    return np.where(valid, depth, 0.0).astype(np.float32)


def load_dpt(spec: ModelSpec, root: str, device: torch.device,
             dtype: torch.dtype | None = None) -> tuple[torch.nn.Module, object]:
    """(model, image processor) from a located folder, strictly (no missing or unexpected weights); ``dtype``
    defaults to :func:`inference_dtype` of the device."""
    from transformers import DPTForDepthEstimation, DPTImageProcessor

    model = from_pretrained_strict(spec.id, DPTForDepthEstimation, root, dtype=dtype or inference_dtype(device))
    processor = DPTImageProcessor.from_pretrained(root, local_files_only=True)
    return model.to(device).eval(), processor


class DptDepth(LocatedImageModel):
    """``(ObjectImage) -> DepthMap`` (relative, larger = farther, valid = foreground)."""

    name = "dpt"
    default_model = DEFAULT_MODEL
    loader = staticmethod(load_dpt)

    @torch.inference_mode()
    def disparity(self, image: ObjectImage) -> np.ndarray:
        """The model's raw relative inverse depth [H,W] at the photo's size (larger = nearer)."""
        rgb = image.composite(BACKGROUND).astype(np.float32)
        if not np.isfinite(rgb).all():
            raise ValueError(f"image {image.name!r} contains NaN or infinite values")
        inputs = self.processor(images=rgb, return_tensors="pt", do_rescale=False)
        pixels = inputs["pixel_values"].to(self.device, dtype=next(self.model.parameters()).dtype)
        predicted = self.model(pixel_values=pixels).predicted_depth.float()
        resized = torch.nn.functional.interpolate(predicted[:, None], size=image.size, mode="bicubic",
                                                  align_corners=False)
        return resized[0, 0].cpu().numpy()

    def __call__(self, image: ObjectImage) -> DepthMap:
        valid = image.alpha > FOREGROUND_ALPHA
        depth = disparity_to_relative_depth(self.disparity(image), valid)
        return DepthMap(depth=depth, valid=valid, metric=False)


def build(settings: DptSettings, context: RunContext) -> DptDepth:
    return DptDepth(settings.model, context.store, context.device, context.dtype)


DPT = register(Backend("dpt", "depth", DptSettings, build, models=lambda s: (s.model,),
                       description="MiDaS / DPT through transformers"))
