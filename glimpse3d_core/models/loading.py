"""Safe loading of weight files, strict loading of library models, and the per-process model cache.

* safetensors files are read with ``safetensors`` (no code runs); torch pickles only with
  ``torch.load(weights_only=True)``.
* Library models load with ``local_files_only`` from a located folder through the library's own
  ``from_pretrained``, and any missing, unexpected or shape-mismatched parameter is an error naming the keys
  (:func:`raise_on_loading_info`), never a silently random layer, except the missing keys that
  :mod:`glimpse3d_core.models.released` lists for that model with their reasons (weights the released files
  leave out and the architecture never uses).
* Loaded models are kept per process (:func:`cached`) so a backend is built once and reused across images.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch

from glimpse3d_core.models.errors import CorruptWeightsError
from glimpse3d_core.models.registry import FileKind, FileSpec
from glimpse3d_core.models.store import ModelStatus, check_hashes

T = TypeVar("T")

_CACHE: dict[Hashable, Any] = {}
_LOCK = threading.Lock()


def cached(key: Hashable, build: Callable[[], T]) -> T:
    """The object cached under ``key`` in this process, built by ``build()`` on first use."""
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = build()
        return _CACHE[key]


def clear_cache() -> None:
    """Drop every cached model (frees their memory once nothing else holds them)."""
    with _LOCK:
        _CACHE.clear()


DTYPES: dict[str, torch.dtype] = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
"""The inference dtypes a run can ask for by name (``PipelineConfig.dtype``)."""


def inference_dtype(device: torch.device | str, name: str = "auto") -> torch.dtype:
    """The dtype named ``name`` (a key of :data:`DTYPES`); ``auto``: fp16 on CUDA, fp32 elsewhere (CPU half
    precision is slow and partly unsupported)."""
    if name != "auto":
        return DTYPES[name]
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


def load_state_dict(model_id: str, path: Path) -> dict[str, torch.Tensor]:
    """A flat tensor state dict from a .safetensors file or a tensors-only torch pickle (never arbitrary code).

    A torch checkpoint that wraps its weights in ``{"state_dict": ...}`` (Lightning style) is unwrapped.
    """
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise CorruptWeightsError(model_id, f"{path} is not a readable safetensors file: {exc}") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        raise CorruptWeightsError(model_id, f"{path} is not a tensors-only torch checkpoint: {exc}") from exc
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CorruptWeightsError(model_id, f"{path} does not hold a flat mapping of tensors")
    return dict(obj)


def file_layout(model_id: str, path: Path) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a weight file: a safetensors header (no tensor read) or a tensors-only torch pickle
    (memory-mapped)."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}  # noqa: SIM118 (not iterable)
        except Exception as exc:
            raise CorruptWeightsError(model_id, f"{path} is not a readable safetensors file: {exc}") from exc
    return {key: tuple(t.shape) for key, t in load_state_dict(model_id, path).items()}


def raise_on_loading_info(model_id: str, info: Mapping[str, Any]) -> None:
    """Fail on the ``output_loading_info`` of a transformers/diffusers ``from_pretrained`` that is not exact, apart
    from the missing keys allowed for ``model_id`` (:mod:`glimpse3d_core.models.released`)."""
    from glimpse3d_core.models.released import split_missing

    missing, _ = split_missing(model_id, info.get("missing_keys", []))
    problems = []
    for label, keys in (("missing", missing), ("unexpected", info.get("unexpected_keys", [])),
                        ("shape-mismatched", info.get("mismatched_keys", [])),
                        ("errors", info.get("error_msgs", []))):
        keys = sorted(str(k) for k in keys)
        if keys:
            shown = ", ".join(str(k) for k in keys[:5]) + (" ..." if len(keys) > 5 else "")
            problems.append(f"{len(keys)} {label} ({shown})")
    if problems:
        raise CorruptWeightsError(model_id, "weights do not match the architecture: " + "; ".join(problems))


def from_pretrained_strict(model_id: str, cls: Any, folder: str | Path, **kwargs: Any) -> Any:
    """``cls.from_pretrained(folder, local_files_only=True, **kwargs)`` that fails, naming the model and the keys,
    on any missing (beyond the allowed ones), unexpected or mis-shaped weight (transformers and diffusers
    classes alike)."""
    try:
        model, info = cls.from_pretrained(folder, local_files_only=True, output_loading_info=True, **kwargs)
    except (RuntimeError, ValueError, OSError, KeyError) as exc:
        raise CorruptWeightsError(model_id, f"{cls.__name__} cannot load {folder}: {exc}") from exc
    raise_on_loading_info(model_id, info)
    return model


def load_strict(model_id: str, model: torch.nn.Module, state: Mapping[str, torch.Tensor],
                assign: bool = False) -> None:
    """``model.load_state_dict(state, strict=True, assign=assign)`` with an error that names the model.

    With ``assign`` the state's tensors become the parameters (use it for a model built on the meta device)."""
    try:
        model.load_state_dict(state, strict=True, assign=assign)
    except RuntimeError as exc:
        raise CorruptWeightsError(model_id, f"weights do not match the architecture: {exc}") from exc


def check_file(model_id: str, spec: FileSpec, path: Path) -> str:
    """Full integrity check of one file (checksums where known, then a structural read); returns a summary."""
    check_hashes(model_id, spec, path)
    hashed = " (checksum ok)" if spec.sha256 or spec.md5 else ""
    if spec.kind is FileKind.SAFETENSORS or spec.kind is FileKind.TORCH:
        state = load_state_dict(model_id, path)
        count = sum(t.numel() for t in state.values())
        return f"{len(state)} tensors, {count:,} values{hashed}"
    if spec.kind is FileKind.ONNX:
        import onnxruntime as ort

        try:
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise CorruptWeightsError(model_id, f"{path} is not a loadable ONNX model: {exc}") from exc
        return f"ONNX graph with {len(session.get_inputs())} input(s){hashed}"
    try:
        path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as exc:
        raise CorruptWeightsError(model_id, f"{path} is not a readable text file: {exc}") from exc
    return f"text{hashed}"


def check_files(status: ModelStatus) -> list[str]:
    """:func:`check_file` for every file of a present model."""
    return [f"{f.spec.path}: {check_file(status.spec.id, f.spec, f.path)}" for f in status.files if f.path]
