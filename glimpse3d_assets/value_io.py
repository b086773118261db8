"""Typed IO: one small class per stored value type, writing the value as real files in a local folder and
reading it back. :func:`io_for` picks the class from the value's type (the explicit table :data:`VALUE_IO`);
the folder's manifest names the class (``type``), so loading never guesses and never imports code.

Files (``value.*``; ``.npz`` holds the exact float32 arrays, the ``.png`` is a preview to look at):

* :class:`Gaussians`: ``value.ply`` (INRIA 3DGS layout, float32, round-trips exactly; :mod:`glimpse3d_core.io.ply`);
* :class:`SegmentOutput`: ``value.npz`` (rgb, alpha, camera viewmat and K) + ``value.png`` (8-bit RGBA);
* :class:`DepthMap`: ``value.npz`` (depth, valid) + ``value.png`` (normalised grey);
* :class:`ViewSet`: ``value.npz`` (rig, rgb, alpha, depth, weights) + ``value.png`` (contact sheet on white);
* :class:`MeshAsset`: ``value.npz`` (exact, world frame +Z up) + ``value.glb`` (+Y up, vertex colours);
* :class:`OutputFolder`: its files as they are under ``value/`` (PLY, GLB, OBJ, MP4, PNG, JSON of the exports);
* ``dict`` (JSON, e.g. the quality metrics): ``value.json`` (NaN and inf as Python's json writes them).
"""

from __future__ import annotations

import json
import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
from PIL import Image

from glimpse3d_core.io.ply import read_ply, write_ply
from glimpse3d_core.stages.segment import SegmentOutput
from glimpse3d_core.types import Camera, CameraRig, DepthMap, Gaussians, MeshAsset, ObjectImage, ViewSet

PREVIEW_BACKGROUND = 1.0
"""Grey level previews composite RGBA on (white, as the evaluation protocol)."""
T = TypeVar("T")


@dataclass(frozen=True)
class OutputFolder:
    """A local folder of finished files (the exports): stored file by file, loaded as a local folder."""

    path: Path

    def files(self) -> list[Path]:
        return sorted(p for p in self.path.rglob("*") if p.is_file())


def save_png(path: Path, image: np.ndarray) -> None:
    """Write a float [H,W], [H,W,3] or [H,W,4] image in [0,1] as an 8-bit PNG."""
    Image.fromarray((np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)).save(path)


def contact_sheet(rgb: np.ndarray, alpha: np.ndarray, columns: int = 8) -> np.ndarray:
    """[C,H,W,3] + [C,H,W] views composited on white, tiled ``columns`` per row -> one float RGB image."""
    c, h, w = alpha.shape
    rows = -(-c // columns)
    sheet = np.full((rows * h, min(c, columns) * w, 3), PREVIEW_BACKGROUND, dtype=np.float32)
    shown = rgb * alpha[..., None] + PREVIEW_BACKGROUND * (1.0 - alpha[..., None])
    for i in range(c):
        r, col = divmod(i, columns)
        sheet[r * h : (r + 1) * h, col * w : (col + 1) * w] = shown[i]
    return sheet


def depth_preview(depth: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Near = bright, far = dim, no surface = black."""
    out = np.zeros(depth.shape, dtype=np.float32)
    if valid.any():
        d = depth[valid]
        lo, hi = float(d.min()), float(d.max())
        out[valid] = 1.0 - (d - lo) / max(hi - lo, 1e-8) * 0.8
    return out


class ValueIO(ABC, Generic[T]):
    """Saves one value type into a folder and loads it back. ``save`` returns small JSON metadata (kept in the
    manifest) that ``load`` receives again; ``preview`` names the file shown as the value's thumbnail."""

    name: ClassVar[str]
    value_type: ClassVar[type]
    preview: ClassVar[str | None] = None

    @abstractmethod
    def save(self, value: T, folder: Path) -> dict[str, Any]: ...

    @abstractmethod
    def load(self, folder: Path, meta: dict[str, Any]) -> T: ...


class GaussiansIO(ValueIO[Gaussians]):
    name, value_type = "gaussians", Gaussians

    def save(self, value: Gaussians, folder: Path) -> dict[str, Any]:
        write_ply(folder / "value.ply", value)
        return {"count": len(value)}

    def load(self, folder: Path, meta: dict[str, Any]) -> Gaussians:
        return read_ply(folder / "value.ply")


class SegmentOutputIO(ValueIO[SegmentOutput]):
    name, value_type, preview = "segment_output", SegmentOutput, "value.png"

    def save(self, value: SegmentOutput, folder: Path) -> dict[str, Any]:
        image, camera = value.image, value.camera
        np.savez(folder / "value.npz", rgb=image.rgb, alpha=image.alpha, viewmat=camera.viewmat, K=camera.K)
        save_png(folder / "value.png", np.concatenate([image.rgb, image.alpha[..., None]], axis=-1))
        return {"name": image.name, "alpha_source": value.alpha_source, "width": camera.width,
                "height": camera.height}

    def load(self, folder: Path, meta: dict[str, Any]) -> SegmentOutput:
        arrays = np.load(folder / "value.npz", allow_pickle=False)
        camera = Camera(arrays["viewmat"], arrays["K"], meta["width"], meta["height"])
        return SegmentOutput(ObjectImage(arrays["rgb"], arrays["alpha"], meta["name"]), camera, meta["alpha_source"])


class DepthMapIO(ValueIO[DepthMap]):
    name, value_type, preview = "depth", DepthMap, "value.png"

    def save(self, value: DepthMap, folder: Path) -> dict[str, Any]:
        np.savez(folder / "value.npz", depth=value.depth, valid=value.valid)
        save_png(folder / "value.png", depth_preview(value.depth, value.valid))
        return {"metric": value.metric}

    def load(self, folder: Path, meta: dict[str, Any]) -> DepthMap:
        arrays = np.load(folder / "value.npz", allow_pickle=False)
        return DepthMap(arrays["depth"], arrays["valid"], metric=meta["metric"])


class ViewSetIO(ValueIO[ViewSet]):
    name, value_type, preview = "views", ViewSet, "value.png"

    def save(self, value: ViewSet, folder: Path) -> dict[str, Any]:
        arrays = {"viewmats": value.rig.viewmats, "Ks": value.rig.Ks, "rgb": value.rgb, "alpha": value.alpha,
                  "weights": value.weights}
        if value.depth is not None:
            arrays["depth"] = value.depth
        np.savez(folder / "value.npz", **arrays)
        save_png(folder / "value.png", contact_sheet(value.rgb, value.alpha))
        return {"width": value.rig.width, "height": value.rig.height}

    def load(self, folder: Path, meta: dict[str, Any]) -> ViewSet:
        arrays = np.load(folder / "value.npz", allow_pickle=False)
        rig = CameraRig(arrays["viewmats"], arrays["Ks"], meta["width"], meta["height"])
        depth = arrays["depth"] if "depth" in arrays.files else None
        return ViewSet(rig=rig, rgb=arrays["rgb"], alpha=arrays["alpha"], depth=depth, weights=arrays["weights"])


class MeshIO(ValueIO[MeshAsset]):
    name, value_type = "mesh", MeshAsset

    def save(self, value: MeshAsset, folder: Path) -> dict[str, Any]:
        from glimpse3d_core.io.mesh import export_glb

        np.savez(folder / "value.npz", vertices=value.vertices, faces=value.faces, vertex_colors=value.vertex_colors)
        export_glb(folder / "value.glb", value)
        return {"vertices": len(value.vertices), "faces": len(value.faces)}

    def load(self, folder: Path, meta: dict[str, Any]) -> MeshAsset:
        arrays = np.load(folder / "value.npz", allow_pickle=False)
        return MeshAsset(arrays["vertices"], arrays["faces"], arrays["vertex_colors"])


class OutputFolderIO(ValueIO[OutputFolder]):
    name, value_type = "folder", OutputFolder

    def save(self, value: OutputFolder, folder: Path) -> dict[str, Any]:
        shutil.copytree(value.path, folder / "value")
        return {}

    def load(self, folder: Path, meta: dict[str, Any]) -> OutputFolder:
        return OutputFolder(folder / "value")


class JsonIO(ValueIO[dict]):
    name, value_type = "json", dict

    def save(self, value: dict, folder: Path) -> dict[str, Any]:
        try:
            text = json.dumps(value, indent=1)
        except TypeError as exc:
            raise TypeError(f"a stored dict must be JSON (numbers, text, lists, dicts): {exc}") from exc
        (folder / "value.json").write_text(text)
        return {}

    def load(self, folder: Path, meta: dict[str, Any]) -> dict:
        return json.loads((folder / "value.json").read_text())


VALUE_IO: dict[type, ValueIO] = {io.value_type: io for io in (
    GaussiansIO(), SegmentOutputIO(), DepthMapIO(), ViewSetIO(), MeshIO(), OutputFolderIO(), JsonIO())}
"""Stored value type -> its IO (every asset's output type is one of these)."""
IO_BY_NAME: dict[str, ValueIO] = {io.name: io for io in VALUE_IO.values()}


def io_for(value: Any) -> ValueIO:
    """The IO of ``value``'s type (exact type: a subclass may carry fields the IO would drop)."""
    found = VALUE_IO.get(type(value))
    if found is None:
        known = ", ".join(t.__name__ for t in VALUE_IO)
        raise TypeError(f"no storage format for {type(value).__name__}; stored types: {known}")
    return found


def io_named(name: str) -> ValueIO:
    """The IO a manifest names."""
    if name not in IO_BY_NAME:
        raise ValueError(f"unknown stored type {name!r}; known: {', '.join(IO_BY_NAME)}")
    return IO_BY_NAME[name]
