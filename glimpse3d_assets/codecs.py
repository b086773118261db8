"""How asset values become real files in a local folder, and back.

Every value is written into one folder and described by a JSON *spec* (kept in the folder's manifest):

* Gaussians: ``gaussians.ply`` (INRIA 3DGS layout, float32, round-trips exactly);
* ObjectImage: ``image.npz`` (exact float32 rgb/alpha) + ``image.png`` (8-bit RGBA, to look at);
* DepthMap: ``depth.npz`` (exact) + ``depth.png`` (normalised grey, to look at);
* ViewSet: ``views.npz`` (rig, rgb, alpha, depth, weights) + ``views.png`` (contact sheet on white);
* MeshAsset: ``mesh.npz`` (exact, world frame +Z up) + ``mesh.glb`` (+Y up, vertex colours);
* OutputFolder: its files as they are (PLY, GLB, OBJ, MP4, PNG, JSON written by the export stage);
* numpy / torch arrays: ``<name>.npy``; pydantic models: inline JSON, rebuilt by class;
* dataclasses and NamedTuples: one entry per field, recursively; other tuples, lists and dicts: per item;
* JSON values: ``value.json`` at the top level (e.g. the quality metrics), inline inside a record.

Classes are rebuilt only from ``glimpse3d_core`` / ``glimpse3d_assets`` modules (a manifest never imports
arbitrary code).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel

from glimpse3d_core.io.ply import read_ply, write_ply
from glimpse3d_core.types import CameraRig, DepthMap, Gaussians, MeshAsset, ObjectImage, ViewSet

TRUSTED_MODULES = ("glimpse3d_core.", "glimpse3d_assets.")
JSON_FILE = "value.json"
PREVIEW_BACKGROUND = 1.0
"""Grey level previews composite RGBA on (white, as the evaluation protocol)."""


@dataclass(frozen=True)
class OutputFolder:
    """A local folder of finished files (the exports): stored file by file, loaded as a local folder."""

    path: Path

    def files(self) -> list[Path]:
        return sorted(p for p in self.path.rglob("*") if p.is_file())


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_png(path: Path, image: np.ndarray) -> None:
    """Write a float [H,W], [H,W,3] or [H,W,4] image in [0,1] as an 8-bit PNG."""
    Image.fromarray(_to_uint8(image)).save(path)


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


def _depth_preview(depth: np.ndarray, valid: np.ndarray) -> np.ndarray:
    out = np.zeros(depth.shape, dtype=np.float32)
    if valid.any():
        d = depth[valid]
        lo, hi = float(d.min()), float(d.max())
        out[valid] = 1.0 - (d - lo) / max(hi - lo, 1e-8) * 0.8  # near = bright, far = dim, none = black
    return out


def _class_path(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}:{cls.__qualname__}"


def _load_class(path: str) -> type:
    module, _, name = path.partition(":")
    if not module.startswith(TRUSTED_MODULES):
        raise ValueError(f"refusing to rebuild class {path!r}: not a glimpse3d class")
    obj: Any = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _is_json_value(obj: Any) -> bool:
    try:
        json.dumps(obj)  # NaN and inf round-trip through Python json
    except (TypeError, ValueError):
        return False
    return True


def encode(obj: Any, folder: Path, name: str = "value") -> dict[str, Any]:
    """Write ``obj`` under ``folder`` (files named after ``name``) and return its spec."""
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(obj, Gaussians):
        write_ply(folder / f"{name}.ply", obj)
        return {"kind": "gaussians", "file": f"{name}.ply"}
    if isinstance(obj, ObjectImage):
        np.savez(folder / f"{name}.npz", rgb=obj.rgb, alpha=obj.alpha)
        save_png(folder / f"{name}.png", np.concatenate([obj.rgb, obj.alpha[..., None]], axis=-1))
        return {"kind": "object_image", "file": f"{name}.npz", "preview": f"{name}.png", "name": obj.name}
    if isinstance(obj, DepthMap):
        np.savez(folder / f"{name}.npz", depth=obj.depth, valid=obj.valid)
        save_png(folder / f"{name}.png", _depth_preview(obj.depth, obj.valid))
        return {"kind": "depth", "file": f"{name}.npz", "preview": f"{name}.png", "metric": obj.metric}
    if isinstance(obj, ViewSet):
        arrays = {"viewmats": obj.rig.viewmats, "Ks": obj.rig.Ks, "rgb": obj.rgb, "alpha": obj.alpha,
                  "weights": obj.weights}
        if obj.depth is not None:
            arrays["depth"] = obj.depth
        np.savez(folder / f"{name}.npz", **arrays)
        save_png(folder / f"{name}.png", contact_sheet(obj.rgb, obj.alpha))
        return {"kind": "views", "file": f"{name}.npz", "preview": f"{name}.png",
                "width": obj.rig.width, "height": obj.rig.height}
    if isinstance(obj, MeshAsset):
        from glimpse3d_core.io.mesh import export_glb

        np.savez(folder / f"{name}.npz", vertices=obj.vertices, faces=obj.faces, vertex_colors=obj.vertex_colors)
        export_glb(folder / f"{name}.glb", obj)
        return {"kind": "mesh", "file": f"{name}.npz", "view": f"{name}.glb"}
    if isinstance(obj, OutputFolder):
        target = folder / name
        shutil.copytree(obj.path, target)
        return {"kind": "folder", "dir": name}
    if isinstance(obj, np.ndarray):
        np.save(folder / f"{name}.npy", obj, allow_pickle=False)
        return {"kind": "ndarray", "file": f"{name}.npy"}
    if isinstance(obj, torch.Tensor):
        np.save(folder / f"{name}.npy", obj.detach().cpu().numpy(), allow_pickle=False)
        return {"kind": "tensor", "file": f"{name}.npy"}
    if isinstance(obj, BaseModel):
        return {"kind": "pydantic", "class": _class_path(obj), "value": obj.model_dump(mode="json")}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = {f.name: encode(getattr(obj, f.name), folder, f"{name}.{f.name}") for f in dataclasses.fields(obj)
                  if f.init}
        return {"kind": "record", "class": _class_path(obj), "fields": fields}
    if isinstance(obj, tuple) and hasattr(type(obj), "_fields"):  # NamedTuple
        fields = {k: encode(getattr(obj, k), folder, f"{name}.{k}") for k in type(obj)._fields}
        return {"kind": "record", "class": _class_path(obj), "fields": fields}
    if isinstance(obj, tuple | list) and not _is_json_value(obj):
        return {"kind": "sequence", "tuple": isinstance(obj, tuple),
                "items": [encode(item, folder, f"{name}.{i}") for i, item in enumerate(obj)]}
    if isinstance(obj, dict) and not _is_json_value(obj):
        if not all(isinstance(k, str) for k in obj):
            raise TypeError(f"cannot store a dict with non-string keys ({name})")
        return {"kind": "mapping", "items": {k: encode(v, folder, f"{name}.{k}") for k, v in obj.items()}}
    if _is_json_value(obj):
        return {"kind": "json", "value": obj}
    raise TypeError(f"no storage format for {type(obj).__name__} ({name})")


def encode_value(obj: Any, folder: Path) -> dict[str, Any]:
    """:func:`encode` for a whole stored value: a plain JSON value gets its own ``value.json`` file."""
    spec = encode(obj, folder)
    if spec["kind"] == "json":
        (folder / JSON_FILE).write_text(json.dumps(obj, indent=1))
        return {"kind": "json_file", "file": JSON_FILE}
    return spec


def decode(spec: dict[str, Any], folder: Path) -> Any:
    """Rebuild the value ``spec`` describes from the files under ``folder``."""
    kind = spec["kind"]
    if kind == "json_file":
        return json.loads((folder / spec["file"]).read_text())
    if kind == "gaussians":
        return read_ply(folder / spec["file"])
    if kind in ("object_image", "depth", "views", "mesh", "ndarray", "tensor"):
        loaded = np.load(folder / spec["file"], allow_pickle=False)
        if kind == "object_image":
            return ObjectImage(rgb=loaded["rgb"], alpha=loaded["alpha"], name=spec["name"])
        if kind == "depth":
            return DepthMap(depth=loaded["depth"], valid=loaded["valid"], metric=spec["metric"])
        if kind == "views":
            rig = CameraRig(loaded["viewmats"], loaded["Ks"], spec["width"], spec["height"])
            depth = loaded["depth"] if "depth" in loaded.files else None
            return ViewSet(rig=rig, rgb=loaded["rgb"], alpha=loaded["alpha"], depth=depth, weights=loaded["weights"])
        if kind == "mesh":
            return MeshAsset(loaded["vertices"], loaded["faces"], loaded["vertex_colors"])
        return loaded if kind == "ndarray" else torch.from_numpy(loaded)
    if kind == "folder":
        return OutputFolder(folder / spec["dir"])
    if kind == "pydantic":
        return _load_class(spec["class"]).model_validate(spec["value"])
    if kind == "record":
        cls = _load_class(spec["class"])
        return cls(**{k: decode(v, folder) for k, v in spec["fields"].items()})
    if kind == "sequence":
        items = [decode(item, folder) for item in spec["items"]]
        return tuple(items) if spec["tuple"] else items
    if kind == "mapping":
        return {k: decode(v, folder) for k, v in spec["items"].items()}
    if kind == "json":
        return spec["value"]
    raise ValueError(f"unknown stored kind {kind!r}")


def _children(spec: dict[str, Any]) -> list[dict[str, Any]]:
    if spec["kind"] == "record":
        return list(spec["fields"].values())
    if spec["kind"] == "mapping":
        return list(spec["items"].values())
    if spec["kind"] == "sequence":
        return list(spec["items"])
    return []


def preview_file(spec: dict[str, Any]) -> str | None:
    """The file name of the value's preview image, if it (or a part of it, depth first) has one."""
    if "preview" in spec:
        return spec["preview"]
    return next((found for child in _children(spec) if (found := preview_file(child))), None)
