"""Shared start-up of the backends that run one transformers image model and its image processor."""

from __future__ import annotations

from collections.abc import Callable

import torch

from glimpse3d_core.models.loading import cached, inference_dtype
from glimpse3d_core.models.registry import ModelSpec, get_spec
from glimpse3d_core.models.store import ModelStore

Loader = Callable[[ModelSpec, str, torch.device, torch.dtype], tuple[torch.nn.Module, object]]


class LocatedImageModel:
    """Locates ``model``'s weights in the model store (a :class:`MissingWeightsError` naming the download command
    when absent) and loads them with ``loader`` strictly, once per process, weights folder, device and dtype
    (default: :func:`~glimpse3d_core.models.loading.inference_dtype` of the device)."""

    name: str
    default_model: str
    loader: Loader

    def __init__(self, model: str | ModelSpec | None = None, store: ModelStore | None = None,
                 device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> None:
        model = self.default_model if model is None else model
        self.spec = get_spec(model) if isinstance(model, str) else model
        root = str((store or ModelStore()).require(self.spec)[0].root)
        self.device = torch.device(device)
        dtype = dtype or inference_dtype(self.device)
        loader = type(self).loader
        self.model, self.processor = cached((self.name, self.spec.id, root, str(self.device), dtype),
                                            lambda: loader(self.spec, root, self.device, dtype))
