"""Mesh -> initial Gaussians: on the surface, aligned with it, sized to the spacing, coloured, deterministic."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from glimpse3d_core.cameras import syncdreamer16_rig
from glimpse3d_core.groundtruth import read_protocol_views
from glimpse3d_core.input_camera import SYNCDREAMER16_VIEW0
from glimpse3d_core.metrics import silhouette_iou
from glimpse3d_core.render import render_views
from glimpse3d_core.render.torch_backend import quat_to_rotmat
from glimpse3d_core.stages import depth, gaussians_from_mesh, reconstruct, segment
from glimpse3d_core.stages.gaussians_from_mesh import GaussiansFromMeshConfig, GaussiansFromMeshError
from glimpse3d_core.types import MeshAsset

CHICKEN_GT = "syncdreamer_eval/syncdreamer_gso_chicken/chicken-gt"


def _sphere(colour=(0.8, 0.3, 0.1)) -> MeshAsset:
    tm = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    return MeshAsset(tm.vertices, tm.faces, np.tile(np.asarray(colour, np.float32), (len(tm.vertices), 1)))


def test_gaussians_lie_on_the_surface_flat_along_it_and_take_its_colour():
    mesh = _sphere()
    g = gaussians_from_mesh.run(mesh, GaussiansFromMeshConfig(num_gaussians=3000, seed=1, inset=0.0))
    assert len(g) == 3000 and g.is_finite() and g.sh_degree == 0
    radius = g.means.norm(dim=1)
    assert float((radius - 0.5).abs().max()) < 0.01  # the icosphere's flat facets sit within 1% of the sphere
    inset = gaussians_from_mesh.run(mesh, GaussiansFromMeshConfig(num_gaussians=3000, seed=1))
    torch.testing.assert_close(inset.means.norm(dim=1) + inset.scales[:, 0], radius, atol=0.01, rtol=0.0)
    axes = quat_to_rotmat(g.quats)
    normal_axis = axes[:, :, 2]
    assert float((normal_axis * g.means / radius[:, None]).sum(1).abs().min()) > 0.95
    scales = g.scales
    np.testing.assert_allclose(scales[:, 0], scales[:, 1])
    np.testing.assert_allclose(scales[:, 2], 0.1 * scales[:, 0], rtol=1e-5)
    spacing = np.sqrt(4 * np.pi * 0.25 / 3000)
    assert 0.3 * spacing < float(scales[:, 0].median()) < 1.5 * spacing
    np.testing.assert_allclose(g.colors.numpy(), np.tile([0.8, 0.3, 0.1], (3000, 1)), atol=1e-5)
    assert float(g.opacities.min()) == pytest.approx(0.9, abs=1e-5)


def test_sampling_is_area_weighted_and_deterministic():
    tm = trimesh.creation.box(extents=(1.0, 0.2, 0.2))  # the long faces hold most of the area
    mesh = MeshAsset(tm.vertices, tm.faces, np.full((len(tm.vertices), 3), 0.5, np.float32))
    cfg = GaussiansFromMeshConfig(num_gaussians=4000, seed=3, inset=0.0)  # centres on the surface
    a, b = gaussians_from_mesh.run(mesh, cfg), gaussians_from_mesh.run(mesh, cfg)
    torch.testing.assert_close(a.means, b.means)
    c = gaussians_from_mesh.run(mesh, cfg.model_copy(update={"seed": 4}))
    assert not torch.equal(a.means, c.means)
    on_ends = (a.means[:, 0].abs() > 0.499).float().mean().item()
    assert on_ends == pytest.approx(2 * 0.04 / tm.area, abs=0.015)  # the two 0.2 x 0.2 end caps


def test_higher_sh_degree_starts_at_zero():
    g = gaussians_from_mesh.run(_sphere(), GaussiansFromMeshConfig(num_gaussians=100, sh_degree=3))
    assert g.shN.shape == (100, 15, 3) and float(g.shN.abs().max()) == 0.0


def test_gaussians_of_a_real_reconstruction_cover_the_input_silhouette(shared_data):
    gt = read_protocol_views(shared_data / CHICKEN_GT)
    seg = segment.run(gt.rgb[0], gt.alpha[0], segment.SegmentConfig(canvas_size=128), SYNCDREAMER16_VIEW0)
    carving = reconstruct.ReconstructConfig(backend=reconstruct.CarvingSettings(resolution=64))
    mesh = reconstruct.run(seg.image, depth.run(seg.image), seg.camera, carving)
    g = gaussians_from_mesh.run(mesh, GaussiansFromMeshConfig(num_gaussians=5000))
    view = render_views(g, syncdreamer16_rig(128).subset([0]), backend="torch")
    assert silhouette_iou(view.alpha[0], seg.image.alpha) > 0.9
    seen = (view.alpha[0] > 0.95) & (seg.image.alpha > 0.95)
    assert np.abs(view.rgb[0][seen] - seg.image.rgb[seen]).mean() < 0.06


def test_inset_splats_render_the_mesh_silhouette_not_a_wider_one():
    mesh = _sphere()
    rig = syncdreamer16_rig(64).subset([0])
    true_area = np.pi * (0.5 * 280 / 4 / np.sqrt(1.5**2 - 0.25)) ** 2  # the sphere's image disc (px), focal 70
    areas = {inset: float((render_views(gaussians_from_mesh.run(mesh, GaussiansFromMeshConfig(
        num_gaussians=3000, inset=inset)), rig, backend="torch").alpha[0] > 0.5).sum()) for inset in (0.0, 1.0)}
    assert abs(areas[1.0] - true_area) < 0.5 * abs(areas[0.0] - true_area)
    assert abs(areas[1.0] - true_area) < 0.03 * true_area


def test_a_mesh_without_area_is_refused():
    flat = MeshAsset(np.zeros((3, 3)), np.array([[0, 1, 2]]), np.zeros((3, 3)))
    with pytest.raises(GaussiansFromMeshError, match="no finite surface area"):
        gaussians_from_mesh.run(flat)
