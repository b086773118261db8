"""Mesh files (trimesh): export our vertex-coloured :class:`MeshAsset` to GLB/OBJ and a UV-textured mesh
(:class:`glimpse3d_core.texture.UVMesh`) to GLB, load textured meshes.

Frames: our world is +Z up. glTF/GLB is +Y up by specification, so GLB export maps (x, y, z) -> (x, z, -y) and
loading a Y-up file maps back (x, y, z) -> (x, -z, y) (as Blender's glTF importer does). OBJ has no fixed
convention: GSO/SyncDreamer OBJs are Z-up, most other tools assume Y-up, so both directions take ``up``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import trimesh
from PIL import Image

from glimpse3d_core.io.atomic import atomic_write
from glimpse3d_core.io.images import to_uint8
from glimpse3d_core.types import MeshAsset

if TYPE_CHECKING:
    from glimpse3d_core.texture import UVMesh

UpAxis = Literal["z", "y"]

Z_UP_TO_Y_UP = np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
"""Maps our +Z-up world to a +Y-up file: (x, y, z) -> (x, z, -y)."""
Y_UP_TO_Z_UP = np.linalg.inv(Z_UP_TO_Y_UP)
"""Maps a +Y-up file into our +Z-up world: (x, y, z) -> (x, -z, y)."""
MESH_SUFFIXES = (".obj", ".glb", ".gltf", ".ply", ".stl", ".off")


class MeshFormatError(ValueError):
    """The file is not a readable triangle mesh (the message says why)."""


def _check_up(up: str) -> None:
    if up not in ("z", "y"):
        raise ValueError(f"up must be 'z' or 'y', got {up!r}")


def to_trimesh(mesh: MeshAsset) -> trimesh.Trimesh:
    """A trimesh with 8-bit RGBA vertex colours (opaque), in our +Z-up world frame."""
    if len(mesh.faces) == 0:
        raise ValueError("refusing to export a mesh with no faces")
    if not np.isfinite(mesh.vertices).all():
        raise ValueError("mesh vertices contain NaN or inf")
    if mesh.faces.min() < 0 or mesh.faces.max() >= len(mesh.vertices):
        raise ValueError(f"face indices outside 0..{len(mesh.vertices) - 1}")
    rgba = np.concatenate([to_uint8(mesh.vertex_colors), np.full((len(mesh.vertices), 1), 255, np.uint8)], axis=1)
    return trimesh.Trimesh(mesh.vertices, mesh.faces, vertex_colors=rgba, process=False)


def export_glb(path: str | os.PathLike[str], mesh: MeshAsset) -> Path:
    """Write a binary glTF (+Y up) with per-vertex colours (COLOR_0), atomically."""
    tm = to_trimesh(mesh)
    tm.apply_transform(Z_UP_TO_Y_UP)
    with atomic_write(path) as tmp:
        tmp.write_bytes(tm.export(file_type="glb"))
    return Path(path)


def export_textured_glb(path: str | os.PathLike[str], mesh: UVMesh) -> Path:
    """Write a binary glTF (+Y up) with TEXCOORD_0 and a PNG baseColorTexture on a matte PBR material
    (metallic 0, roughness 1), atomically. No vertex colours: glTF multiplies COLOR_0 into the base colour."""
    check = to_trimesh(MeshAsset(mesh.vertices, mesh.faces, mesh.vertex_colors))  # same validation as the rest
    material = trimesh.visual.material.PBRMaterial(
        baseColorTexture=Image.fromarray(to_uint8(mesh.texture)), metallicFactor=0.0, roughnessFactor=1.0,
        doubleSided=False)
    tm = trimesh.Trimesh(check.vertices, check.faces, process=False,
                         visual=trimesh.visual.TextureVisuals(uv=mesh.uv, material=material))
    tm.apply_transform(Z_UP_TO_Y_UP)
    with atomic_write(path) as tmp:
        tmp.write_bytes(tm.export(file_type="glb"))
    return Path(path)


def export_obj(path: str | os.PathLike[str], mesh: MeshAsset, up: UpAxis = "z") -> Path:
    """Write a Wavefront OBJ with vertex colours (``v x y z r g b``, colours in [0, 1] at the GLBs' 8 bits), atomically.

    ``up="z"`` keeps our world frame (as GSO meshes and the SyncDreamer evaluation expect); ``"y"`` rotates to +Y up.
    The text is one printf-style format over each array, not formatted row by row as trimesh's OBJ writer does;
    positions keep 6 decimals (1e-6 of the unit extent)."""
    _check_up(up)
    tm = to_trimesh(mesh)
    if up == "y":
        tm.apply_transform(Z_UP_TO_Y_UP)
    rows = np.concatenate([tm.vertices, tm.visual.vertex_colors[:, :3] / 255.0], axis=1)
    text = (("v %.6f %.6f %.6f %.4f %.4f %.4f\n" * len(rows)) % tuple(rows.ravel().tolist())
            + ("f %d %d %d\n" * len(tm.faces)) % tuple((tm.faces + 1).ravel().tolist()))
    with atomic_write(path) as tmp:
        tmp.write_text(text)
    return Path(path)


@dataclass
class TexturedMesh:
    """A mesh as loaded from a file: one trimesh per part (each with its own material/texture or colours),
    in our +Z-up world frame, transforms of the file's scene graph applied."""

    parts: list[trimesh.Trimesh]

    @property
    def bounds(self) -> np.ndarray:
        """[2,3] axis-aligned bounding box over all parts."""
        both = np.stack([p.bounds for p in self.parts])
        return np.stack([both[:, 0].min(0), both[:, 1].max(0)])

    def transformed(self, matrix: np.ndarray) -> TexturedMesh:
        """A copy with the 4x4 ``matrix`` applied to every part."""
        parts = [p.copy() for p in self.parts]
        for p in parts:
            p.apply_transform(matrix)
        return TexturedMesh(parts)

    def geometry(self) -> tuple[trimesh.Trimesh, np.ndarray]:
        """All parts as one plain trimesh (no visuals) and the first face index of each part [P+1]."""
        offsets = np.cumsum([0, *(len(p.faces) for p in self.parts)])
        vertex_offsets = np.cumsum([0, *(len(p.vertices) for p in self.parts)])
        vertices = np.concatenate([p.vertices for p in self.parts])
        faces = np.concatenate([p.faces + o for p, o in zip(self.parts, vertex_offsets[:-1], strict=True)])
        return trimesh.Trimesh(vertices, faces, process=False), offsets


def load_textured_mesh(path: str | os.PathLike[str], up: UpAxis = "z") -> TexturedMesh:
    """Load a glTF/GLB, OBJ(+MTL) or other mesh file with its textures into our +Z-up world.

    ``up`` names the file's up axis: "z" (GSO OBJs) keeps coordinates, "y" (glTF) rotates Y-up to Z-up. A missing
    texture image is tolerated (trimesh falls back to the material colour); a file with no triangles is an error.
    """
    _check_up(up)
    path = Path(path)
    if not path.is_file():
        raise MeshFormatError(f"{path}: no such file")
    try:
        scene = trimesh.load(path, force="scene")
    except Exception as exc:  # trimesh raises many types (ValueError, KeyError, struct.error, ...) on bad input
        raise MeshFormatError(f"{path}: not a readable mesh: {exc}") from exc
    parts = [g for g in scene.dump() if isinstance(g, trimesh.Trimesh) and len(g.faces) > 0]
    if not parts:
        raise MeshFormatError(f"{path}: no triangles found")
    mesh = TexturedMesh(parts)
    if not np.isfinite(mesh.bounds).all():
        raise MeshFormatError(f"{path}: vertices contain NaN or inf")
    return mesh.transformed(Y_UP_TO_Z_UP) if up == "y" else mesh
