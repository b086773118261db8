"""Ground-truth rendering: reproduce SyncDreamer's own chicken-gt from the GSO mesh; texture/colour lookup."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from PIL import Image

from glimpse3d_core.cameras import OrbitSpec, orbit_rig
from glimpse3d_core.groundtruth import (
    DEPTH_BACKGROUND,
    GroundTruthConfig,
    decode_depth,
    encode_depth,
    read_protocol_views,
    render_ground_truth,
    render_mesh_views,
    write_protocol_views,
)
from glimpse3d_core.io.mesh import TexturedMesh, export_glb, load_textured_mesh
from glimpse3d_core.metrics import silhouette_iou
from glimpse3d_core.types import MeshAsset

CHICKEN = "syncdreamer_eval/syncdreamer_gso_chicken"
CHICKEN_ROTATE_Z = 90.0  # PROTOCOL.md: GT vertices turned by -270° about z, i.e. +90°


def depth_mae(a, b) -> float:
    both = (a.depth > 0) & (b.depth > 0)
    return float(np.abs(a.depth - b.depth)[both].mean())


@pytest.fixture(scope="module")
def chicken_reference(shared_data):
    return read_protocol_views(shared_data / CHICKEN / "chicken-gt")


def test_reproduces_syncdreamer_chicken_gt(shared_data, chicken_reference, tmp_path):
    mesh = shared_data / CHICKEN / "chicken-mesh/meshes/model.obj"
    views = render_ground_truth(mesh, GroundTruthConfig(up="z", rotate_z_deg=CHICKEN_ROTATE_Z))
    write_protocol_views(tmp_path, views)  # through the protocol's files, as `glimpse3d eval render-gt` writes
    ours = read_protocol_views(tmp_path)
    iou = silhouette_iou(ours.alpha, chicken_reference.alpha)
    mae = depth_mae(ours, chicken_reference)
    print(f"chicken render-gt: silhouette IoU {iou:.5f}, depth MAE {mae:.6f}")
    assert iou >= 0.99 and mae <= 0.005
    per_view = [silhouette_iou(ours.alpha[i], chicken_reference.alpha[i]) for i in range(16)]
    assert min(per_view) >= 0.98


def test_wrong_turn_does_not_reproduce(shared_data, chicken_reference):
    mesh = shared_data / CHICKEN / "chicken-mesh/meshes/model.obj"
    views = render_ground_truth(mesh, GroundTruthConfig(image_size=256, rotate_z_deg=-CHICKEN_ROTATE_Z))
    assert silhouette_iou(views.alpha, chicken_reference.alpha) < 0.95


def test_depth_encoding_round_trip():
    depth = np.array([[0.0, 0.61, 1.5], [2.39, 3.0, 0.3]], np.float32)
    encoded = encode_depth(depth, depth > 0)
    assert encoded[0, 0] == DEPTH_BACKGROUND and encoded[1, 1] == DEPTH_BACKGROUND and encoded[1, 2] == DEPTH_BACKGROUND
    decoded, valid = decode_depth(encoded)
    assert valid.tolist() == [[False, False, True], [False, False, False]]  # 0.61 and 2.39 lie outside (0.63, 2.37)
    assert abs(decoded[0, 2] - 1.5) <= 0.5 * 1.8 / 65535 + 1e-6


def quadrant_quad(visual) -> trimesh.Trimesh:
    """A unit square in the plane x = 0 facing +X, u along +Y, v along +Z."""
    vertices = np.array([[0, -0.5, -0.5], [0, 0.5, -0.5], [0, 0.5, 0.5], [0, -0.5, 0.5]], float)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    return trimesh.Trimesh(vertices, faces, visual=visual, process=False)


QUAD_UV = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float)
QUADRANTS = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [255, 255, 255]]], np.uint8)  # row 0 = top (v=1)
TEXTURE = np.kron(QUADRANTS, np.ones((4, 4, 1), np.uint8))  # 8x8 texels: bilinear lookups stay inside a quadrant
FRONT_RIG = orbit_rig(OrbitSpec(num_views=1, elevation_deg=0.0, distance=2.0, focal_px=40.0, image_size=32))


def quadrant_colors(mesh: trimesh.Trimesh, supersample: int = 1) -> np.ndarray:
    views = render_mesh_views(TexturedMesh([mesh]), FRONT_RIG, supersample)
    return views.rgb[0][[8, 8, 24, 24], [8, 24, 8, 24]]  # top-left, top-right, bottom-left, bottom-right


@pytest.mark.parametrize("material", ["simple", "pbr"])
def test_texture_lookup_orientation(material):
    image = Image.fromarray(TEXTURE)
    if material == "simple":
        visual = trimesh.visual.TextureVisuals(uv=QUAD_UV, image=image)
    else:
        pbr = trimesh.visual.material.PBRMaterial(baseColorTexture=image, baseColorFactor=[255, 255, 255, 255])
        visual = trimesh.visual.TextureVisuals(uv=QUAD_UV, material=pbr)
    colors = quadrant_colors(quadrant_quad(visual))
    # seen from +X, image right is world +Y (u) and image up is world +Z (v)
    assert np.allclose(colors, QUADRANTS.reshape(4, 3) / 255.0, atol=1e-6)


@pytest.mark.parametrize("textured", [False, True])
def test_gltf_base_colour_factor_is_linear(textured):
    """glTF's baseColorFactor is linear light: a 0.5 factor on white shows as sRGB 0.735, not 0.5; with a texture
    the product is taken in linear light (white texel x 0.5 -> 0.735; black stays black)."""
    factor = [128, 128, 128, 255]  # trimesh stores the linear factor x 255
    if textured:
        pbr = trimesh.visual.material.PBRMaterial(baseColorTexture=Image.fromarray(TEXTURE), baseColorFactor=factor)
    else:
        pbr = trimesh.visual.material.PBRMaterial(baseColorFactor=factor)
    colors = quadrant_colors(quadrant_quad(trimesh.visual.TextureVisuals(uv=QUAD_UV, material=pbr)))
    expected = 1.055 * (128 / 255) ** (1 / 2.4) - 0.055
    if textured:  # bottom-right is white, top-left red
        assert np.allclose(colors[3], expected, atol=1e-4)
        assert np.allclose(colors[0], [expected, 0.0, 0.0], atol=1e-4)
    else:
        assert np.allclose(colors, expected, atol=1e-4)


def test_vertex_colours_through_our_glb(tmp_path):
    """Our GLB export (Y up) read back with up='y' renders the same vertex colours in the same place."""
    colors = np.array([[1, 0, 0], [1, 0, 0], [0, 0, 1], [0, 0, 1]], np.float32)  # red bottom, blue top
    quad = quadrant_quad(None)
    path = export_glb(tmp_path / "q.glb", MeshAsset(quad.vertices, quad.faces, colors))
    views = render_mesh_views(load_textured_mesh(path, up="y"), FRONT_RIG)
    assert np.allclose(views.rgb[0, 24, 16], [1, 0, 0], atol=0.15)  # near the bottom edge: red
    assert np.allclose(views.rgb[0, 8, 16], [0, 0, 1], atol=0.15)  # near the top edge: blue


def test_supersampled_alpha_is_fractional_at_edges(shared_data):
    mesh = shared_data / CHICKEN / "chicken-mesh/meshes/model.obj"
    views = render_ground_truth(mesh, GroundTruthConfig(image_size=48, rotate_z_deg=CHICKEN_ROTATE_Z, supersample=3))
    alpha = views.alpha[0]
    assert ((alpha > 0) & (alpha < 1)).any() and alpha.max() == 1.0
    assert (views.depth[0][alpha == 0] == 0).all()
