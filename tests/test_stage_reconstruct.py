"""Reconstruct stage (weight-free carving): closed, upright, re-projects onto the silhouette, coloured."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from glimpse3d_core.cameras import look_at, orbit_position, syncdreamer16_rig
from glimpse3d_core.groundtruth import read_protocol_views, render_mesh_views
from glimpse3d_core.input_camera import CANONICAL, SYNCDREAMER16_VIEW0
from glimpse3d_core.io.images import load_image
from glimpse3d_core.io.mesh import TexturedMesh, to_trimesh
from glimpse3d_core.metrics import composite_white, silhouette_iou
from glimpse3d_core.stages import depth, reconstruct, segment
from glimpse3d_core.stages.reconstruct import ReconstructConfig, ReconstructionError
from glimpse3d_core.types import Camera, CameraRig, MeshAsset

SIZE = 128
CARVING = reconstruct.CarvingSettings(resolution=64)
CONFIG = ReconstructConfig(backend=CARVING)
CHICKEN_GT = "syncdreamer_eval/syncdreamer_gso_chicken/chicken-gt"


def carving(**fields) -> ReconstructConfig:
    """The test's carving settings with ``fields`` changed."""
    return ReconstructConfig(backend=CARVING.model_copy(update=fields))


def _front(rgb, alpha, spec, config=CONFIG):
    seg = segment.run(rgb, alpha, segment.SegmentConfig(canvas_size=SIZE), spec)
    return seg, reconstruct.run(seg.image, depth.run(seg.image), seg.camera, config)


def _render(mesh: MeshAsset, rig: CameraRig):
    return render_mesh_views(TexturedMesh([to_trimesh(mesh)]), rig)


@pytest.fixture(scope="module")
def cat(shared_data):
    rgb, alpha = load_image(shared_data / "inputs/dreamgaussian/catstatue_rgba.png")
    return _front(rgb, alpha, CANONICAL)


def test_mesh_is_closed_upright_unit_sized_and_reprojects_onto_the_silhouette(cat):
    seg, mesh = cat
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces)
    assert tm.is_watertight and tm.volume > 0
    assert 0.7 < tm.extents.max() < 1.4
    assert np.abs(tm.bounds.mean(0)[:2]).max() < 0.25  # about the vertical axis through the origin
    view = _render(mesh, CameraRig(seg.camera.viewmat[None], seg.camera.K[None], SIZE, SIZE))
    assert silhouette_iou(view.alpha[0], seg.image.alpha) > 0.9


def test_colours_follow_the_photo_and_the_back_mirrors_the_front(cat):
    """Default colours (contour statistics mixed with the mirror copy): the back has the photo's mean colour."""
    seg, mesh = cat
    cam = seg.camera
    back = Camera(look_at(-cam.center), cam.K, SIZE, SIZE)  # the opposite side, same height
    views = _render(mesh, CameraRig(np.stack([cam.viewmat, back.viewmat]), np.stack([cam.K, back.K]), SIZE, SIZE))
    seen = (views.alpha[0] > 0.99) & (seg.image.alpha > 0.99)
    assert np.abs(views.rgb[0][seen] - seg.image.rgb[seen]).mean() < 0.06
    photo_mean = seg.image.rgb[seg.image.alpha > 0.5].mean(0)
    np.testing.assert_allclose(views.rgb[1][views.alpha[1] > 0.99].mean(0), photo_mean, atol=0.1)


def test_known_camera_puts_the_mesh_in_the_rig_frame(shared_data):
    gt = read_protocol_views(shared_data / CHICKEN_GT)
    _, mesh = _front(gt.rgb[0], gt.alpha[0], SYNCDREAMER16_VIEW0)
    assert trimesh.Trimesh(mesh.vertices, mesh.faces).is_watertight
    views = _render(mesh, syncdreamer16_rig(SIZE).subset([0, 4, 8, 12]))
    gt_alpha = gt.alpha[[0, 4, 8, 12]].reshape(4, SIZE, 2, SIZE, 2).mean((2, 4))
    ious = [silhouette_iou(views.alpha[i], gt_alpha[i]) for i in range(4)]
    assert ious[0] > 0.97  # the input view, framing kept
    assert min(ious[1:]) > 0.85  # novel views of the ground truth: upright, right place and size


def test_ground_contact_cuts_what_hangs_below_the_lowest_visible_point(cat):
    seg, mesh = cat
    floating = reconstruct.run(seg.image, depth.run(seg.image), seg.camera, carving(
        **{"ground_contact": False}))
    assert mesh.vertices[:, 2].min() > floating.vertices[:, 2].min() + 0.005


def test_depth_cross_section_is_thinner_than_discs(cat):
    seg, mesh = cat
    slab = reconstruct.run(seg.image, depth.run(seg.image), seg.camera, carving(
        **{"cross_section": "depth"}))
    volume = lambda m: trimesh.Trimesh(m.vertices, m.faces).volume  # noqa: E731
    assert 0.3 * volume(mesh) < volume(slab) < volume(mesh)


def test_bad_inputs_raise_reconstruction_errors(cat):
    seg, _ = cat
    dep = depth.run(seg.image)
    empty = seg.image.__class__(seg.image.rgb, np.zeros_like(seg.image.alpha))
    with pytest.raises(ReconstructionError, match="empty silhouette"):
        reconstruct.run(empty, dep, seg.camera, CONFIG)
    top = Camera(look_at(orbit_position(0.0, 90.0, 1.5)), seg.camera.K, SIZE, SIZE)
    with pytest.raises(ReconstructionError, match="straight down"):
        reconstruct.run(seg.image, dep, top, CONFIG)
    small = dep.__class__(dep.depth[:64, :64], dep.valid[:64, :64])
    with pytest.raises(ReconstructionError, match="does not match"):
        reconstruct.run(seg.image, small, seg.camera, CONFIG)
    with pytest.raises(ValueError, match="expected tags"):
        ReconstructConfig(backend="triposr-nope")


def test_an_object_thinner_than_a_voxel_names_the_setting_that_fixes_it():
    """A rod 30 px tall and 980 px long (the smoke preset's 64 px canvas) at 24 voxels along its length carves to
    nothing: the error says what to raise (it once surfaced as marching cubes' 'Surface level must be within volume
    data range'); at 128 voxels the same photo reconstructs."""
    photo = np.zeros((40, 1000, 3), np.float32)
    alpha = np.zeros((40, 1000), np.float32)
    photo[5:35, 10:990] = (0.8, 0.2, 0.2)
    alpha[5:35, 10:990] = 1.0
    seg = segment.run(photo, alpha, segment.SegmentConfig(canvas_size=64), CANONICAL)
    dep = depth.run(seg.image)
    with pytest.raises(ReconstructionError, match=r"raise reconstruct\.backend\.fallback\.resolution"):
        reconstruct.run(seg.image, dep, seg.camera, carving(resolution=24))
    assert len(reconstruct.run(seg.image, dep, seg.camera, carving(resolution=128)).faces) > 0


def _banded_bottle() -> MeshAsset:
    """An upright cylinder (radius 0.25, height 0.8, about the origin) with a red upper and a blue lower band."""
    tm = trimesh.creation.cylinder(radius=0.25, height=0.8, sections=64)
    vertices, faces = trimesh.remesh.subdivide_to_size(tm.vertices, tm.faces, max_edge=0.02)
    colours = np.where(vertices[:, 2:] > 0.05, [[0.8, 0.1, 0.1]], [[0.1, 0.2, 0.8]]).astype(np.float32)
    return MeshAsset(vertices, faces, colours)


def test_mirror_axis_finds_the_symmetry_line_of_a_silhouette():
    mask = np.zeros((64, 64), dtype=bool)
    mask[10:50, 20:40] = True  # symmetric about u = 30
    mask[10:20, 12:48] = True
    u, iou = reconstruct.mirror_axis(mask)
    assert u == 30.0 and iou == 1.0
    mask[40:50, 40:60] = True  # a handle on one side only
    assert reconstruct.mirror_axis(mask)[1] < 0.85


def test_solid_of_revolution_prior_keeps_a_round_object_round_and_its_bands_level():
    rig = syncdreamer16_rig(SIZE).subset([0, 4, 8])
    truth = _render(_banded_bottle(), rig)
    seg = segment.run(truth.rgb[0], truth.alpha[0], segment.SegmentConfig(canvas_size=SIZE), SYNCDREAMER16_VIEW0)
    errors = {}
    for mode in ("auto", "off"):
        mesh = reconstruct.run(seg.image, depth.run(seg.image), seg.camera, carving(
            **{"revolution": mode}))
        views = _render(mesh, rig)
        errors[mode] = [float(np.abs(composite_white(views.rgb[i], views.alpha[i])
                                     - composite_white(truth.rgb[i], truth.alpha[i])).mean()) for i in (1, 2)]
        if mode == "auto":  # taken: round from the side and from behind, silhouette and colours
            assert min(silhouette_iou(views.alpha[i], truth.alpha[i]) for i in range(3)) > 0.95
    assert max(errors["auto"]) < 0.03 and max(errors["auto"]) < 0.7 * max(errors["off"])


def test_solid_of_revolution_is_not_taken_for_an_object_it_does_not_explain(cat):
    seg, mesh = cat  # a sitting cat: its silhouette is far from a solid of revolution's
    off = reconstruct.run(seg.image, depth.run(seg.image), seg.camera, carving(
        **{"revolution": "off"}))
    np.testing.assert_array_equal(mesh.faces, off.faces)
    forced = reconstruct.run(seg.image, depth.run(seg.image), seg.camera, carving(
        **{"revolution": "on"}))
    assert len(forced.faces) != len(off.faces)


def test_contour_colours_carry_the_rim_inwards():
    """The rim band's colour (red) fills the silhouette's middle; the blue middle itself is not sampled."""
    yy, xx = np.mgrid[0:64, 0:64] + 0.5
    r = np.hypot(yy - 32, xx - 32)
    mask = r < 24
    rgb = np.where((r < 12)[..., None], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0])
    out = reconstruct.contour_colours(rgb, mask, band=0.25, sigma=0.25)
    np.testing.assert_allclose(out[32, 32], [1.0, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(out[mask], np.broadcast_to([1.0, 0.0, 0.0], out[mask].shape), atol=1e-6)


def test_contour_hidden_colour_smooths_the_back_and_keeps_the_front(cat):
    seg, _ = cat
    mirror, contour = (reconstruct.run(seg.image, depth.run(seg.image), seg.camera, carving(**fields))
                       for fields in ({"hidden_colour": "mirror"}, {"hidden_colour": "contour", "contour_weight": 1.0}))
    cam = seg.camera
    back = Camera(look_at(-cam.center), cam.K, SIZE, SIZE)
    rig = CameraRig(np.stack([cam.viewmat, back.viewmat]), np.stack([cam.K, back.K]), SIZE, SIZE)
    v_mirror, v_contour = _render(mirror, rig), _render(contour, rig)
    seen = (v_mirror.alpha[0] > 0.99) & (v_contour.alpha[0] > 0.99)
    assert np.abs(v_mirror.rgb[0][seen] - v_contour.rgb[0][seen]).mean() < 0.01  # the visible side is the photo's
    spread = [v.rgb[1][v.alpha[1] > 0.99].std(0).mean() for v in (v_mirror, v_contour)]
    assert spread[1] < 0.7 * spread[0]  # the back: the rim's smooth colours, not a copy of the front's detail


def _body_at_yaw(yaw_deg: float) -> MeshAsset:
    """A horizontal ellipsoid (semi-axes 0.45, 0.12, 0.15 about the origin), red front half and blue back half,
    whose symmetry plane (vertical, through its long axis) has its normal at ``yaw_deg`` from +X (the input
    camera's side) counter-clockwise seen from above: the long axis points at ``yaw_deg - 90`` degrees."""
    tm = trimesh.creation.icosphere(subdivisions=4)
    tm.apply_scale([0.45, 0.12, 0.15])
    tm.apply_transform(trimesh.transformations.rotation_matrix(np.radians(yaw_deg - 90.0), [0, 0, 1]))
    axis = np.array([np.cos(np.radians(yaw_deg - 90.0)), np.sin(np.radians(yaw_deg - 90.0)), 0.0])
    colours = np.where((tm.vertices @ axis)[:, None] > 0, [[0.8, 0.1, 0.1]], [[0.1, 0.2, 0.8]]).astype(np.float32)
    return MeshAsset(tm.vertices, tm.faces, colours)


def test_symmetry_normal_is_used_only_where_the_mirrored_camera_adds_a_view():
    normal, lateral = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    np.testing.assert_allclose(reconstruct.symmetry_normal(normal, lateral, 45.0), [0.5**0.5, 0.5**0.5, 0.0])
    np.testing.assert_allclose(reconstruct.symmetry_normal(normal, lateral, -30.0), [0.75**0.5, -0.5, 0.0])
    for yaw in (None, 0.0, 10.0, -80.0, 90.0):  # mirrored camera behind (180 deg) or on the input camera (0 deg)
        assert reconstruct.symmetry_normal(normal, lateral, yaw) is None


def test_a_known_symmetry_plane_gives_the_body_its_length_across_the_view():
    """A body seen at 3/4 (its plane at 45 degrees): with the plane known, the novel views' silhouettes and colours
    are much closer to the truth than with the mid-plane; a plane in the fallback range changes nothing."""
    rig = syncdreamer16_rig(SIZE).subset([0, 2, 4, 8, 12])
    truth = _render(_body_at_yaw(45.0), rig)
    seg = segment.run(truth.rgb[0], truth.alpha[0], segment.SegmentConfig(canvas_size=SIZE), SYNCDREAMER16_VIEW0)
    dep = depth.run(seg.image)
    ious, errors = {}, {}
    for yaw in (None, 45.0):
        views = _render(reconstruct.run(seg.image, dep, seg.camera, carving(symmetry_yaw_deg=yaw)), rig)
        ious[yaw] = [silhouette_iou(views.alpha[i], truth.alpha[i]) for i in range(1, 5)]
        errors[yaw] = np.mean([np.abs(composite_white(views.rgb[i], views.alpha[i])
                                      - composite_white(truth.rgb[i], truth.alpha[i])).mean() for i in range(1, 5)])
    assert np.mean(ious[45.0]) > 0.8 and np.mean(ious[45.0]) > np.mean(ious[None]) + 0.15
    assert errors[45.0] < 0.6 * errors[None]
    default = reconstruct.run(seg.image, dep, seg.camera, CONFIG)
    fallback = reconstruct.run(seg.image, dep, seg.camera, carving(symmetry_yaw_deg=10.0))
    np.testing.assert_array_equal(default.faces, fallback.faces)
    np.testing.assert_array_equal(default.vertex_colors, fallback.vertex_colors)
