"""Load the released ``syncdreamer-pretrain.ckpt`` strictly into :class:`SyncDreamer`.

The checkpoint is a torch pickle of ``{"state_dict": {...}}`` (1618 float32 tensors, 5.57 GB), read with
``torch.load(weights_only=True)`` memory-mapped, so no code runs. The model is built on the meta device and adopts
the loaded tensors (``assign=True``), so no memory goes to a random initialisation; any missing, unexpected or
mis-shaped tensor is an error. CLIP's weights come from this checkpoint too: ``ViT-L-14.pt`` is not read.
On ``device`` the parameters take ``dtype`` (fp16 on CUDA) while the schedule and camera buffers stay float32.
"""

from __future__ import annotations

from pathlib import Path

import torch

from glimpse3d_core.models.errors import CorruptWeightsError, MissingWeightsError
from glimpse3d_core.models.loading import load_state_dict
from glimpse3d_core.models.syncdreamer.config import SyncDreamerConfig
from glimpse3d_core.models.syncdreamer.model import SyncDreamer

MODEL_ID = "syncdreamer"
CHECKPOINT_NAME = "syncdreamer-pretrain.ckpt"


def locate(source: str | Path | None) -> Path:
    """The checkpoint file for a model folder, the file itself, or None (the model store's copy).
    Raises MissingWeightsError naming ``glimpse3d models download syncdreamer``."""
    if source is None:
        from glimpse3d_core.models.store import ModelStore

        return ModelStore().require(MODEL_ID)[0].path(CHECKPOINT_NAME)
    path = Path(source).expanduser()
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise MissingWeightsError([MODEL_ID], [f"  not found: {path}"])
    return path


def cast_for_inference(model: SyncDreamer, device: torch.device | str, dtype: torch.dtype) -> SyncDreamer:
    """Parameters to ``dtype`` on ``device``; floating buffers stay float32 (the sampler's schedule and the
    camera geometry need the precision); eval mode, no gradients."""
    for param in model.parameters():
        param.data = param.data.to(device=device, dtype=dtype)
    for module in model.modules():
        for name, buf in module.named_buffers(recurse=False):
            module._buffers[name] = buf.to(device=device, dtype=torch.float32)
    return model.eval().requires_grad_(False)


def build_from_state_dict(state: dict[str, torch.Tensor], config: SyncDreamerConfig | None = None) -> SyncDreamer:
    """A model on the meta device that adopts ``state`` (strict); CorruptWeightsError on any mismatch."""
    with torch.device("meta"):
        model = SyncDreamer(config or SyncDreamerConfig())
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise CorruptWeightsError(MODEL_ID, f"weights do not match the architecture: {exc}") from exc
    return model


def load_syncdreamer(
    source: str | Path | None = None, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
    config: SyncDreamerConfig | None = None,
) -> SyncDreamer:
    """SyncDreamer with the released weights, in eval mode on ``device``.

    ``source``: the checkpoint file, the folder holding ``syncdreamer-pretrain.ckpt``, or None for the model
    store's copy. ``config`` defaults to the released architecture (a different one only fits other checkpoints).
    """
    path = locate(source)
    return cast_for_inference(build_from_state_dict(load_state_dict(MODEL_ID, path), config), device, dtype)
