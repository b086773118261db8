"""Load the released stabilityai/TripoSR weights (``config.yaml`` + ``model.ckpt`` or ``model.safetensors``).

The checkpoint is a plain state dict; it is read without running code (safetensors, or
``torch.load(weights_only=True)`` memory-mapped) and loaded strictly: any missing, unexpected or mis-shaped
tensor is an error. The model is built on the meta device and adopts the loaded tensors, so no memory goes to
a random initialisation. ``dtype`` applies to the image tokenizer, triplane tokens, backbone and upsampler; the
NeRF decoder (41k parameters) always stays float32, because its density goes through exp() and would overflow
fp16 above 65504.
"""

from __future__ import annotations

from pathlib import Path

import torch

from glimpse3d_core.models.errors import CorruptWeightsError, MissingWeightsError
from glimpse3d_core.models.loading import load_state_dict
from glimpse3d_core.models.triposr.config import ConfigFileError, TripoSRConfig
from glimpse3d_core.models.triposr.model import CheckpointMismatchError, TripoSR
from glimpse3d_core.models.triposr.settings import MODEL_ID

CONFIG_NAME = "config.yaml"
WEIGHT_NAMES = ("model.safetensors", "model.ckpt")
"""Weight files in the order they are preferred (safetensors loads without unpickling)."""


def locate(source: str | Path | None) -> tuple[Path, Path]:
    """(config.yaml, weight file) for a model folder, a weight file (config.yaml beside it), or None (the
    model store's folder or Hugging Face cache). Raises MissingWeightsError naming the download command."""
    if source is None:
        from glimpse3d_core.models.store import ModelStore

        status = ModelStore().require(MODEL_ID)[0]
        source = status.root
    path = Path(source).expanduser()
    if path.is_dir():
        folder = path
        weights = next((folder / n for n in WEIGHT_NAMES if (folder / n).is_file()), folder / WEIGHT_NAMES[-1])
    else:
        folder, weights = path.parent, path
    config = folder / CONFIG_NAME
    absent = [str(p) for p in (config, weights) if not p.is_file()]
    if absent:
        raise MissingWeightsError([MODEL_ID], [f"  not found: {p}" for p in absent])
    return config, weights


def cast_for_inference(model: TripoSR, device: torch.device | str, dtype: torch.dtype) -> TripoSR:
    """Move to ``device``; ``dtype`` for everything but the decoder, which stays float32 (module docstring)."""
    model.to(device=device)
    for part in (model.image_tokenizer, model.tokenizer, model.backbone, model.post_processor):
        part.to(dtype=dtype)
    return model.eval().requires_grad_(False)


def load_triposr(
    source: str | Path | None = None, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> TripoSR:
    """The TripoSR model with the released weights, in eval mode on ``device``.

    ``source``: the model folder (config.yaml + model.ckpt/model.safetensors), or the weight file itself with
    config.yaml beside it, or None for the model store's copy.
    """
    config_path, weight_path = locate(source)
    try:
        config = TripoSRConfig.from_yaml(config_path)
    except ConfigFileError as exc:
        raise CorruptWeightsError(MODEL_ID, str(exc)) from exc
    state = load_state_dict(MODEL_ID, weight_path)
    with torch.device("meta"):
        model = TripoSR(config)
    try:
        model.load_checkpoint_state_dict(state, assign=True)
    except CheckpointMismatchError as exc:
        raise CorruptWeightsError(MODEL_ID, f"{weight_path}: {exc}") from exc
    return cast_for_inference(model, device, dtype)
