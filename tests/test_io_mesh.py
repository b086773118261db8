"""Mesh export (GLB +Y up, OBJ with vertex colours) and textured-mesh loading."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from glimpse3d_core.io.images import to_uint8
from glimpse3d_core.io.mesh import MeshFormatError, export_glb, export_obj, load_textured_mesh
from glimpse3d_core.types import MeshAsset


def tall_box() -> MeshAsset:
    box = trimesh.creation.box(extents=(0.2, 0.4, 1.0))  # tallest along our +Z (up)
    colors = np.tile(np.array([[0.2, 0.4, 0.8]], np.float32), (len(box.vertices), 1))
    colors[0] = [1.0, 0.0, 0.0]
    return MeshAsset(box.vertices, box.faces, colors)


def test_glb_is_y_up_with_vertex_colours(tmp_path):
    mesh = tall_box()
    path = export_glb(tmp_path / "m.glb", mesh)
    assert path.read_bytes()[:4] == b"glTF"
    loaded = trimesh.load(path, force="mesh", process=False)
    assert np.allclose(loaded.extents, [0.2, 1.0, 0.4], atol=1e-6)  # z-up height became glTF's y
    colors = np.asarray(loaded.visual.vertex_colors)[:, :3]
    assert {tuple(c) for c in colors} == {(255, 0, 0), (51, 102, 204)}
    back = load_textured_mesh(path, up="y")
    assert np.allclose(back.bounds, [mesh.vertices.min(0), mesh.vertices.max(0)], atol=1e-6)  # exact round trip


def test_obj_vertex_colours_and_up(tmp_path):
    mesh = tall_box()
    text = export_obj(tmp_path / "m.obj", mesh).read_text()
    first_vertex = next(line for line in text.splitlines() if line.startswith("v "))
    assert len(first_vertex.split()) == 7  # v x y z r g b
    z_up = load_textured_mesh(tmp_path / "m.obj", up="z")
    assert np.allclose(z_up.bounds[1] - z_up.bounds[0], [0.2, 0.4, 1.0], atol=1e-5)
    back = trimesh.load(tmp_path / "m.obj", force="mesh", process=False)
    assert np.allclose(back.vertices, mesh.vertices, atol=1e-6) and np.array_equal(back.faces, mesh.faces)
    assert np.array_equal(np.asarray(back.visual.vertex_colors)[:, :3], to_uint8(mesh.vertex_colors))
    export_obj(tmp_path / "y.obj", mesh, up="y")
    y_up = trimesh.load(tmp_path / "y.obj", force="mesh", process=False)
    assert np.allclose(y_up.extents, [0.2, 1.0, 0.4], atol=1e-5)


def test_export_refuses_bad_mesh(tmp_path):
    mesh = tall_box()
    mesh.vertices[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        export_glb(tmp_path / "m.glb", mesh)
    with pytest.raises(ValueError, match="no faces"):
        export_obj(tmp_path / "m.obj", MeshAsset(np.zeros((3, 3)), np.zeros((0, 3)), np.zeros((3, 3))))
    assert list(tmp_path.iterdir()) == []


def test_load_real_textured_meshes(shared_data):
    cow = load_textured_mesh(shared_data / "meshes/spot_cow/cow.obj")
    assert cow.parts[0].visual.material.image is not None
    avocado = load_textured_mesh(shared_data / "meshes/avocado/glTF/Avocado.gltf", up="y")
    extents = avocado.bounds[1] - avocado.bounds[0]
    assert extents.argmax() == 2  # the avocado stands upright (+Z) after the Y-up -> Z-up turn
    assert avocado.parts[0].visual.material.baseColorTexture is not None


def test_load_rejects_bad_files(tmp_path):
    (tmp_path / "bad.obj").write_text("this is not a mesh\n")
    (tmp_path / "bad.glb").write_bytes(b"glTF\x02\x00\x00\x00garbage")
    for name in ["bad.obj", "bad.glb", "missing.obj"]:
        with pytest.raises(MeshFormatError):
            load_textured_mesh(tmp_path / name)
    with pytest.raises(ValueError, match="up must be"):
        load_textured_mesh(tmp_path / "bad.obj", up="x")  # type: ignore[arg-type]
