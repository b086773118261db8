"""Segment backend: rembg with a registered model (U²-Net, IS-Net, BiRefNet) or a custom ONNX file.

rembg's own session classes do the pre- and post-processing of each model family (resize, normalisation,
min-max scaling of the prediction); we only hand them the file we located and verified, so nothing is
downloaded at run time. Sessions are cached per process and reused across images. Device: CPU, or CUDA where
onnxruntime-gpu is installed (rembg picks the provider). Importing rembg imports pymatting, whose numba functions
compile on a first import without their on-disk cache (about a minute; docs/deployment.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from glimpse3d_core.backends.base import Backend, BackendSettings, RunContext, register
from glimpse3d_core.models.loading import cached
from glimpse3d_core.models.registry import ModelSpec, get_spec
from glimpse3d_core.models.store import ModelStore

DEFAULT_MODEL = "rembg-u2net"
CUSTOM_SESSION = "u2net_custom"
"""rembg session family used for a custom ONNX file unless told otherwise (320 px, ImageNet normalisation)."""
MAX_PIXELS = 64_000_000


class RembgSettings(BackendSettings):
    """Segment backend ``rembg``: which rembg model to run (a registry model, or a custom ONNX file)."""

    name: Literal["rembg"] = "rembg"
    model: str = Field(DEFAULT_MODEL, description="registry id of the model (glimpse3d models list)")
    onnx_path: str | None = Field(None, description="a custom ONNX file instead of a registry model")
    onnx_session: str = Field(CUSTOM_SESSION, description="rembg session family whose pre/post-processing the "
                              "custom file needs (u2net_custom, dis_custom, ...)")


def _session_class(session: str) -> Any:
    from rembg.sessions import sessions

    if session not in sessions:
        raise ValueError(f"rembg has no session family {session!r}; choose one of {', '.join(sorted(sessions))}")
    return sessions[session]


def _open_session(session: str, path: Path) -> Any:
    """A rembg session of family ``session`` that reads ``path`` instead of downloading anything."""
    import onnxruntime as ort

    family = _session_class(session)
    local_path = str(path)

    class LocalFileSession(family):  # type: ignore[misc, valid-type]
        @classmethod
        def download_models(cls, *args: Any, **kwargs: Any) -> str:
            return local_path

    return LocalFileSession(session, ort.SessionOptions(), model_path=local_path)


class RembgSegmenter:
    """``(rgb [H,W,3] float32 in [0,1]) -> alpha [H,W] float32 in [0,1]`` through a rembg ONNX session."""

    name = "rembg"

    def __init__(self, session: str, path: Path, label: str) -> None:
        self.session_name = session
        self.path = path
        self.label = label
        self.session = cached(("rembg", session, str(path)), lambda: _open_session(session, path))

    @classmethod
    def from_registry(cls, model: str | ModelSpec = DEFAULT_MODEL, store: ModelStore | None = None) -> RembgSegmenter:
        """The registered model ``model`` (e.g. ``rembg-u2net``); MissingWeightsError where it is not local."""
        spec = get_spec(model) if isinstance(model, str) else model
        status = (store or ModelStore()).require(spec)[0]
        return cls(spec.options["session"], status.path(spec.files[0].path), spec.id)

    @classmethod
    def from_onnx(cls, path: str | Path, session: str = CUSTOM_SESSION) -> RembgSegmenter:
        """A custom ONNX file, run with the pre/post-processing of rembg session family ``session``."""
        onnx_path = Path(path).expanduser().resolve()
        if not onnx_path.is_file():
            raise FileNotFoundError(f"custom segmentation model {onnx_path} does not exist")
        _session_class(session)
        return cls(session, onnx_path, f"custom:{onnx_path.name}")

    @classmethod
    def from_settings(cls, settings: RembgSettings, store: ModelStore | None = None) -> RembgSegmenter:
        """The custom file when one is given, else the registry model."""
        if settings.onnx_path:
            return cls.from_onnx(settings.onnx_path, settings.onnx_session)
        return cls.from_registry(settings.model, store)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        from PIL import Image
        from rembg import remove

        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] * rgb.shape[1] == 0:
            raise ValueError(f"segment expects a non-empty [H,W,3] image, got shape {rgb.shape}")
        if rgb.shape[0] * rgb.shape[1] > MAX_PIXELS:
            raise ValueError(f"image of {rgb.shape[1]}x{rgb.shape[0]} pixels exceeds {MAX_PIXELS:,} pixels")
        if not np.isfinite(rgb).all():
            raise ValueError("image contains NaN or infinite values")
        image = Image.fromarray(np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8), mode="RGB")
        mask = remove(image, session=self.session, only_mask=True)
        alpha = np.asarray(mask, dtype=np.float32) / 255.0
        if alpha.shape != rgb.shape[:2]:
            raise RuntimeError(f"rembg returned a {alpha.shape} mask for a {rgb.shape[:2]} image")
        return alpha


def build(settings: RembgSettings, context: RunContext) -> RembgSegmenter:
    return RembgSegmenter.from_settings(settings, context.store)


REMBG = register(Backend("rembg", "segment", RembgSettings, build,
                         models=lambda s: () if s.onnx_path else (s.model,),
                         description="rembg (U²-Net, IS-Net, BiRefNet) or a custom ONNX file"))
