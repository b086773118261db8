"""Reconstruct stage: object image + relative depth + input camera -> closed, coloured coarse mesh (world frame).

The weight-free backend ``carving`` builds an upright volume (world +Z up, object about the origin):

1. **Mid-plane.** The vertical plane through the origin facing the camera (its normal ``n`` is the camera
   direction's horizontal part). Each silhouette pixel's ray meets it at one point; using the known elevation
   this way keeps the object upright instead of tilting it with the viewing rays.
2. **Thickness from depth.** The relative depth is read as "how much nearer than the silhouette rim": ``delta =
   rim depth - depth`` (rim depth = median on the silhouette edge). Its unknown scale is fixed by the circular
   cross-section prior: the largest half-thickness equals the silhouette's largest inscribed radius, times
   ``thickness_scale``. Pixel lengths become world lengths at the mid-plane's depth.
3. **Cross-sections.** ``depth``: the object at a mid-plane point ``p`` spans ``|n . x| <= thickness(p)``
   horizontally (front surface from the depth, back surface its mirror: front/back symmetry). ``discs`` (default,
   the upright prior): each mid-plane point carries a horizontal disc, at least as thick as the depth says and
   up to the largest disc whose image (an ellipse squashed by the elevation) fits in the silhouette, the vertical
   squash weighted by ``horizontal_bias`` (by default from the silhouette's aspect: tall = upright discs, wide =
   balls); the object is the union of the discs (a bottle or a vase comes out round, a lying body less fat).
4. **Silhouette cone.** That volume is intersected with the cone of the silhouette seen from the camera, so the
   result re-projects onto the input silhouette.
4b. **Solid of revolution** (``revolution``). Many objects (bottles, vases, cups, stacking toys, pots) are round
   about a vertical axis. The candidate is the largest solid of revolution about the vertical axis under the
   silhouette's left-right mirror axis whose every horizontal circle projects inside the silhouette (the visual
   hull of the silhouette as if seen from all around at the camera's elevation; perspective and the 30 degree
   view handled exactly). Rule ('auto'): it is taken when its image covers at least ``revolution_min_coverage``
   (0.9) of the silhouette. On the held-out photos this splits cleanly: waterbottle 1.0, SyncDreamer's chicken
   0.94, cactus 0.94 take it; robot 0.85, thor hammer 0.85, frog 0.83, teapot 0.82, chair 0.81, avocado 0.81,
   teddy 0.79, cat 0.62, cow 0.50 do not. When taken, the object is that solid plus the carved volume of steps
   1-4 restricted to the cone of the silhouette part the solid leaves uncovered (a handle, a base plate), so the
   input silhouette stays exact (the solid is trimmed to the silhouette's cone too). Its hidden side is coloured
   by step 7's mirror, which for a solid of revolution maps each point to the visible point on the same
   horizontal circle (same height and radius):
   horizontal bands stay level in side views.
5. **Ground contact** (``ground_contact``): the object rests on a horizontal ground, so nothing lies lower than
   the lowest surface point the camera sees (found by marching the silhouette rays).
6. Marching cubes (skimage) on the minimum of those signed distances (world units) gives a closed surface.
7. **Colours**: vertices the input camera sees (ray cast) take the photo's colour; hidden ones take the colour
   of their mirror image through the mid-plane (the visible side's colour: front/back symmetry), so the back
   is never left grey. Photo colours outside the silhouette are replaced by the nearest foreground colour so that
   edge samples carry no background. ``hidden_colour='contour'`` (default) mixes that copy, for hidden vertices,
   with statistics of the visible side near the occluding contour: the colours of the silhouette's rim band
   (``contour_band`` of the largest inscribed radius deep) diffused inwards by normalised Gaussian convolution
   (sigma ``contour_sigma`` of the silhouette's larger side), sampled where the mirror copy would be, weight
   ``contour_weight`` (0.5). The back meets the front at the occluding contour, so its colour near the contour is
   the rim's; away from it the copy's detail (spots, labels, faces) is a guess whose error costs more than a
   smooth average's. A solid of revolution (step 4b) keeps the mirror: there it is the ring's own colour.
   Measured with ``glimpse3d bench`` (research/results/weightfree_ablation.md): novel views +0.10 dB on average
   over seven objects (spot_cow +0.47, milk truck +0.16), none worse than -0.03.
8. **A known mirror plane** (``symmetry_yaw_deg``, off by default). A bilaterally symmetric object whose symmetry
   plane (vertical, through the origin, its normal ``m`` at yaw ``psi`` from the mid-plane's normal towards the
   lateral axis, counter-clockwise seen from above) is not the mid-plane is seen by the input camera's mirror image
   in that plane, ``180 - 2|psi|`` degrees round, exactly as in the photo (flipped): a second real view. World point
   ``x`` shows there at the photo's pixel of its reflection ``x - 2 (m . x) m``. When that view is 45-135 degrees
   from the input camera (MIRROR_BASELINE_DEG; otherwise the setting changes nothing), the volume is the two-view
   visual hull (the silhouette's cone from the camera and from its mirror image), cut to a slab along the symmetry
   plane (half-thickness: step 2-3's thickness map, the larger of its values where the point and its reflection
   project), plus the mid-plane carving of any silhouette part that leaves uncovered (ears, a seat's sides: the
   input silhouette stays whole); hidden vertices whose reflection the camera sees take that point's photo colour.
   A solid of revolution (step 4b) ignores it. With the true plane, on views turned 30 and 45 degrees from
   side-on, it gains +4.3 to +4.7 dB on an elongated body (fox) and +0.9 to +1.1 on the milk truck, and loses 0.5
   to 1.3 dB on compact or wide objects (chair, helmet, Suzanne: the two-view hull's corners along the plane are
   empty in truth); no estimator of the plane from one photo was found reliable
   (research/results/weightfree_ablation.md), hence off.

Measured with ``research/front_preview.py`` (SyncDreamer protocol, view 0 in with the known camera, 15 novel
views), this coarse mesh alone scores 16.8 / 14.5 / 22.9 / 25.3 dB PSNR on spot_cow / avocado / waterbottle /
SyncDreamer's chicken (19.2 / 22.8 on the last two without the solid of revolution), where copying the photo
scores 14.4 / 13.3 / 22.3 / 23.2.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

import numpy as np
import trimesh
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage
from skimage.measure import marching_cubes

from glimpse3d_core.backends import triposr_reconstruct  # noqa: F401  (registers the 'triposr' backend)
from glimpse3d_core.backends.base import Backend, BackendSettings, backend_field, build_stage_backend, register
from glimpse3d_core.types import Camera, DepthMap, MeshAsset, ObjectImage

ReconstructBackend = Callable[[ObjectImage, DepthMap, Camera], MeshAsset]
GRID_PADDING = 3
"""Empty voxels around the object on each side of the grid (keeps the marching-cubes surface closed)."""
WORLD_UP = np.array([0.0, 0.0, 1.0])
CONE_SLICE = 16
"""Grid slices projected at a time when carving the silhouette cone (bounds the memory)."""
TALL_ASPECT, WIDE_ASPECT = 1.5, 1.0
"""Silhouette height/width at or above which cross-sections are discs, at or below which they are balls."""
REVOLUTION_ANGLES = 72
"""Points sampled on each horizontal circle when testing whether it fits the silhouette (solid of revolution)."""
REVOLUTION_SLACK_PX = 0.5
"""The circles are tested against the silhouette grown by this much: sampling its distance map at finite angles
(bilinearly) otherwise leaves the solid's rim short of the silhouette edge (waterbottle: 78 silhouette pixels
uncovered at 0, 21 at 0.5 px); the silhouette's exact cone trims the excess."""
RAY_CHUNK = 4096
"""Rays marched at a time when testing which silhouette pixels the solid of revolution covers (bounds memory)."""
LEFTOVER_OPENING = 1.0 / 256.0
"""Opening radius (fraction of the canvas side, rounded to whole pixels) of the silhouette part the solid of
revolution leaves uncovered: drops the slivers along its rim, which would otherwise grow into fins."""
MIRROR_BASELINE_DEG = (45.0, 135.0)
"""Angles (degrees, about the vertical) between the input camera and its mirror image for which a given symmetry
plane is used: nearer 0 the mirrored view adds nothing, nearer 180 its cone and the photo's leave the depth open."""
MIN_ELEVATION_SIN = 0.05
"""Below this elevation (about 3 degrees) discs are sized as if seen from it: a disc seen edge-on fits anywhere."""


class ReconstructionError(ValueError):
    """No mesh can be built from these inputs (empty silhouette, camera looking straight down, ...)."""


class CarvingSettings(BackendSettings):
    """Reconstruct backend ``carving`` (weight-free): see the module docstring."""

    name: Literal["carving"] = "carving"
    resolution: int = Field(128, ge=16, le=256, description="voxels along the grid's longest side")
    thickness_scale: float = Field(1.0, gt=0.0, description="multiplies the circular-prior half-thickness")
    min_thickness_voxels: float = Field(1.5, ge=0.0, description="least half-thickness inside the silhouette "
                                                                 "(voxels), so thin parts survive marching cubes")
    alpha_threshold: float = Field(0.5, gt=0.0, lt=1.0, description="alpha above this is the silhouette")
    cross_section: Literal["discs", "depth"] = Field(
        "discs", description="'discs': horizontal discs sized to fit the silhouette (upright prior), at least as "
                             "thick as the depth says; 'depth': the depth-derived slab alone")
    horizontal_bias: Annotated[float, Field(ge=0.0, le=1.0)] | Literal["auto"] = Field(
        "auto", description="how far cross-sections are horizontal discs (1) rather than balls (0); 'auto': from the "
                            "silhouette's aspect (see horizontal_bias_from_aspect)")
    ground_contact: bool = Field(True, description="cut away what lies below the lowest visible surface point "
                                                   "(the object rests on a horizontal ground)")
    revolution: Literal["auto", "on", "off"] = Field(
        "auto", description="solid-of-revolution prior about a vertical axis through the silhouette's mirror axis: "
                            "'auto' uses it when it explains the silhouette (see revolution_min_coverage)")
    revolution_min_coverage: float = Field(
        0.9, gt=0.0, le=1.0, description="'auto' takes the solid of revolution when its image covers at least this "
                                          "fraction of the silhouette")
    min_component_fraction: float = Field(0.01, ge=0.0, lt=1.0,
                                          description="drop mesh components with fewer faces than this fraction")
    visibility_tolerance_voxels: float = Field(0.5, ge=0.0,
                                               description="a vertex this close behind the first hit is visible")
    hidden_colour: Literal["mirror", "contour"] = Field(
        "contour", description="colour of vertices the camera does not see: 'mirror' copies the visible side through "
                              "the mid-plane; 'contour' mixes that copy with the rim band's colours diffused inwards "
                              "(step 7 of the module docstring)")
    contour_band: float = Field(0.25, gt=0.0, le=1.0, description="'contour': rim band depth, as a fraction of the "
                                                                  "silhouette's largest inscribed radius")
    contour_sigma: float = Field(0.25, gt=0.0, description="'contour': Gaussian sigma of the inward diffusion, as a "
                                                           "fraction of the silhouette's larger side")
    contour_weight: float = Field(0.5, ge=0.0, le=1.0, description="'contour': weight of the diffused rim colour "
                                                                   "against the mirror copy")
    symmetry_yaw_deg: float | None = Field(
        None, ge=-90.0, le=90.0, description="yaw (degrees, counter-clockwise seen from above) of a vertical mirror "
                                             "plane through the origin, from the mid-plane facing the camera; None: "
                                             "that mid-plane (step 8 of the module docstring)")


class _Projector:
    """World points -> pixel coordinates and camera depth for one OpenCV camera."""

    def __init__(self, camera: Camera) -> None:
        self.R = np.asarray(camera.viewmat, dtype=np.float64)[:3, :3]
        self.t = np.asarray(camera.viewmat, dtype=np.float64)[:3, 3]
        self.K = np.asarray(camera.K, dtype=np.float64)
        self.center = -self.R.T @ self.t

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(u, v, z): pixel coordinates (pixel centres at integer + 0.5) and camera z of ``points`` [...,3]."""
        cam = points @ self.R.T + self.t
        z = cam[..., 2]
        safe = np.where(z > 1e-9, z, 1e-9)
        return self.K[0, 0] * cam[..., 0] / safe + self.K[0, 2], self.K[1, 1] * cam[..., 1] / safe + self.K[1, 2], z

    def rays(self, us: np.ndarray, vs: np.ndarray) -> np.ndarray:
        """World directions [...,3] of the rays through pixels (us, vs), scaled to unit camera z."""
        d = np.stack([(us - self.K[0, 2]) / self.K[0, 0], (vs - self.K[1, 2]) / self.K[1, 1], np.ones_like(us)], -1)
        return d @ self.R


def _sample(image: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear samples of a [H,W] array at pixel coordinates (edge values extend outwards)."""
    coords = np.stack([np.ravel(v) - 0.5, np.ravel(u) - 0.5])
    return ndimage.map_coordinates(image, coords, order=1, mode="nearest").reshape(np.shape(u))


def _cone(edge_px: np.ndarray, u: np.ndarray, v: np.ndarray, z: np.ndarray, focal: float) -> np.ndarray:
    """Signed distance (world units at each point's depth ``z``, positive inside) of points projected to pixels
    (``u``, ``v``) to the viewing cone of a silhouette whose signed pixel distance to its edge is ``edge_px``; -1
    behind the camera."""
    return np.nan_to_num(_sample(edge_px, u, v) * np.where(z > 0, np.maximum(z, 1e-9) / focal, np.nan), nan=-1.0)


def _mid_plane_axes(projector: _Projector) -> tuple[np.ndarray, np.ndarray]:
    """(normal n, lateral l): the vertical mid-plane through the origin facing the camera, with l = up x n."""
    horizontal = projector.center - (projector.center @ WORLD_UP) * WORLD_UP
    if np.linalg.norm(horizontal) < 1e-6 * np.linalg.norm(projector.center):
        raise ReconstructionError("the input camera looks straight down or up; no upright mid-plane is defined")
    normal = horizontal / np.linalg.norm(horizontal)
    return normal, np.cross(WORLD_UP, normal)


def symmetry_normal(normal: np.ndarray, lateral: np.ndarray, yaw_deg: float | None) -> np.ndarray | None:
    """Unit normal (world) of the vertical mirror plane at ``yaw_deg`` from the mid-plane normal ``normal`` towards
    ``lateral`` (counter-clockwise seen from above), or None (the mid-plane rules) when no yaw is given or the
    mirrored camera, ``180 - 2 |yaw|`` degrees round from the input camera, is not in MIRROR_BASELINE_DEG."""
    if yaw_deg is None or not MIRROR_BASELINE_DEG[0] <= 180.0 - 2.0 * abs(yaw_deg) <= MIRROR_BASELINE_DEG[1]:
        return None
    yaw = np.radians(yaw_deg)
    return np.cos(yaw) * normal + np.sin(yaw) * lateral


def _thickness_px(depth: DepthMap, mask: np.ndarray, thickness_scale: float) -> np.ndarray:
    """Half-thickness [H,W] in pixels from a relative depth (see step 2 of the module docstring)."""
    valid = mask & depth.valid
    rim = valid & ~ndimage.binary_erosion(valid)
    delta = np.where(valid, float(np.median(depth.depth[rim])) - depth.depth, 0.0).clip(0.0, None)
    inscribed = ndimage.distance_transform_edt(mask)
    if delta.max() <= 0:  # a flat depth carries no shape: fall back to the distance to the edge
        delta = inscribed
    return thickness_scale * float(inscribed.max()) / float(delta.max()) * delta


def horizontal_bias_from_aspect(mask: np.ndarray) -> float:
    """Upright prior by silhouette shape: a tall silhouette (height >= TALL_ASPECT x width: bottles, vases,
    figurines) is taken as upright and round in plan (bias 1, horizontal discs); one as wide as tall or wider
    (WIDE_ASPECT: animals side-on, cars) as lying bodies whose cross-sections are round across the body (bias 0,
    balls); linear in between."""
    ys, xs = np.nonzero(mask)
    aspect = (np.ptp(ys) + 1) / (np.ptp(xs) + 1)
    return float(np.clip((aspect - WIDE_ASPECT) / (TALL_ASPECT - WIDE_ASPECT), 0.0, 1.0))


def _disc_radius_px(mask: np.ndarray, elevation_sin: float, horizontal_bias: float) -> np.ndarray:
    """Radius [H,W] (px) of the largest horizontal disc centred on each pixel's mid-plane point whose image fits in
    the silhouette: a disc seen from elevation e is an ellipse squashed vertically by sin(e), so vertical distances
    to the edge count ``(1 / sin e) ** horizontal_bias`` times (bias 1: exact discs; 0: balls)."""
    stretch = (1.0 / max(elevation_sin, MIN_ELEVATION_SIN)) ** horizontal_bias
    return ndimage.distance_transform_edt(mask, sampling=(stretch, 1.0))


def mirror_axis(mask: np.ndarray) -> tuple[float, float]:
    """(u, iou): the vertical image line ``u`` (pixel coordinates) about which the silhouette is most nearly
    left-right symmetric, and the IoU of the silhouette with its mirror image about it."""
    cols = np.flatnonzero(mask.any(axis=0))
    x = np.arange(mask.shape[1])
    best = (0.0, (cols[0] + cols[-1] + 1) / 2.0)
    for twice in range(2 * cols[0] + 1, 2 * cols[-1] + 2):  # axis at twice / 2: column x mirrors to twice - 1 - x
        xm = twice - 1 - x
        ok = (xm >= 0) & (xm < len(x))
        mirrored = np.zeros_like(mask)
        mirrored[:, ok] = mask[:, xm[ok]]
        iou = float((mask & mirrored).sum() / (mask | mirrored).sum())
        best = max(best, (iou, twice / 2.0))
    return best[1], best[0]


class _Revolution:
    """A solid of revolution about the vertical axis at lateral ``axis_a`` (grid axes ``axes`` = lateral, up,
    normal): the largest one whose every horizontal circle projects inside the silhouette (the visual hull of the
    silhouette seen from all around at the input camera's elevation), tabulated over (height, radius) as the
    least signed distance (world units, positive inside) of a circle's points to the silhouette's cone."""

    def __init__(self, signed_edge_px: np.ndarray, proj: _Projector, axes: np.ndarray, axis_a: float,
                 heights: np.ndarray, radii: np.ndarray) -> None:
        self.axes, self.axis_a, self.heights, self.radii = axes, axis_a, heights, radii
        phi = np.linspace(0.0, 2.0 * np.pi, REVOLUTION_ANGLES, endpoint=False)
        ring = np.cos(phi)[:, None] * axes[2] + np.sin(phi)[:, None] * axes[0]
        points = (axis_a * axes[0] + heights[:, None, None, None] * axes[1]
                  + radii[None, :, None, None] * ring[None, None])
        u, v, z = proj.project(points)
        self.table = (_sample(signed_edge_px, u, v) * np.maximum(z, 1e-9) / float(proj.K[0, 0])).min(axis=2)

    def field(self, points: np.ndarray, outside: float) -> np.ndarray:
        """Signed distance-like values [...] at world ``points`` [...,3] (``outside`` beyond the table)."""
        local = points @ self.axes.T
        rows = (local[..., 1] - self.heights[0]) / (self.heights[1] - self.heights[0])
        cols = np.hypot(local[..., 0] - self.axis_a, local[..., 2]) / (self.radii[1] - self.radii[0])
        return ndimage.map_coordinates(self.table, [rows.ravel(), cols.ravel()], order=1,
                                       cval=outside).reshape(rows.shape)

    def covered(self, proj: _Projector, mask: np.ndarray) -> np.ndarray:
        """[H,W]: silhouette pixels whose ray enters the solid (ray marching at half the table's height step)."""
        vs, us = np.nonzero(mask)
        dirs = proj.rays(us + 0.5, vs + 0.5)
        centre = self.axis_a * self.axes[0] + self.heights.mean() * self.axes[1]
        reach = np.hypot(self.radii[-1], np.ptp(self.heights) / 2.0)
        depth = (centre - proj.center) @ proj.R[2]
        steps = np.arange(depth - reach, depth + reach, 0.5 * (self.heights[1] - self.heights[0]))
        covered = np.zeros_like(mask)
        for i in range(0, len(dirs), RAY_CHUNK):
            points = proj.center + steps[None, :, None] * dirs[i:i + RAY_CHUNK, None, :]
            covered[vs[i:i + RAY_CHUNK], us[i:i + RAY_CHUNK]] = (self.field(points, -1.0) > 0).any(axis=1)
        return covered


def carve(image: ObjectImage, depth: DepthMap, camera: Camera, config: CarvingSettings) -> MeshAsset:
    """The weight-free ``carving`` backend (see the module docstring)."""
    mesh, voxel, revolution, mirror = _carve_mesh(image, depth, camera, config)
    mask = image.alpha > config.alpha_threshold
    proj = _Projector(camera)
    normal, _ = _mid_plane_axes(proj)
    contour = config.hidden_colour == "contour" and not revolution
    colours = _vertex_colours(mesh, image, mask, proj, normal, config.visibility_tolerance_voxels * voxel,
                              config if contour else None, mirror)
    return MeshAsset(mesh.vertices, mesh.faces, colours)


def _carve_mesh(image: ObjectImage, depth: DepthMap, camera: Camera,
                config: CarvingSettings) -> tuple[trimesh.Trimesh, float, bool, np.ndarray | None]:
    """(mesh, voxel size, whether the solid of revolution was taken, the symmetry plane's unit normal or None):
    steps 1-6 and 8 of the module docstring."""
    mask = image.alpha > config.alpha_threshold
    if not mask.any():
        raise ReconstructionError(f"{image.name}: empty silhouette, nothing to reconstruct")
    if depth.depth.shape != mask.shape:
        raise ReconstructionError(f"depth {depth.depth.shape} does not match the image {mask.shape}")
    proj = _Projector(camera)
    normal, lateral = _mid_plane_axes(proj)
    axes = np.stack([lateral, WORLD_UP, normal])  # grid axes (a, b, c) = (lateral, up, normal)
    focal = float(proj.K[0, 0])

    # Mid-plane hit of every pixel ray: its camera depth converts pixels to world units there.
    h, w = mask.shape
    vs, us = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    dirs = proj.rays(us, vs)
    denom = dirs @ normal
    plane_z = -(proj.center @ normal) / np.where(np.abs(denom) > 1e-12, denom, -1e-12)
    if not np.all(plane_z[mask] > 0):
        raise ReconstructionError(f"{image.name}: some silhouette rays never meet the mid-plane (camera too oblique)")
    plane_z = np.where(plane_z > 0, plane_z, float(plane_z[mask].max()))
    px_to_world = plane_z / focal
    thickness_px = _thickness_px(depth, mask, config.thickness_scale)
    if config.cross_section == "discs":
        elevation_sin = abs(proj.center @ WORLD_UP) / np.linalg.norm(proj.center)
        bias = horizontal_bias_from_aspect(mask) if config.horizontal_bias == "auto" else config.horizontal_bias
        disc = _disc_radius_px(mask, elevation_sin, bias)
        thickness_px = np.maximum(thickness_px, config.thickness_scale * disc)
    thickness = thickness_px * px_to_world
    hits = (proj.center + plane_z[mask][:, None] * dirs[mask]) @ axes.T
    outside_px = ndimage.distance_transform_edt(~mask)
    signed_edge_px = ndimage.distance_transform_edt(mask) - outside_px
    revolution = _fit_revolution(mask, signed_edge_px, hits, proj, axes, config)
    covered = revolution.covered(proj, mask) if revolution else np.zeros_like(mask)
    if revolution and config.revolution == "auto" and covered[mask].mean() < config.revolution_min_coverage:
        revolution, covered = None, np.zeros_like(mask)
    half_depth = max(float(thickness.max()), float(revolution.radii[-1]) if revolution else 0.0)
    mirror = None if revolution else symmetry_normal(normal, lateral, config.symmetry_yaw_deg)
    if mirror is not None:  # the mirrored camera's cone bounds the depth: room for a body lying across the view
        half_depth = max(half_depth, float(np.abs(hits[:, 0]).max()))

    # Grid with cubic voxels over the mid-plane footprint and the thickest part.
    lo = np.array([hits[:, 0].min(), hits[:, 1].min(), -half_depth])
    hi = np.array([hits[:, 0].max(), hits[:, 1].max(), half_depth])
    if revolution:
        lo[0], hi[0] = min(lo[0], revolution.axis_a - half_depth), max(hi[0], revolution.axis_a + half_depth)
    voxel = float((hi - lo).max()) / (config.resolution - 2 * GRID_PADDING)
    lo -= GRID_PADDING * voxel
    counts = np.ceil((hi - lo) / voxel).astype(int) + GRID_PADDING
    a, b, c = (lo[i] + voxel * np.arange(counts[i]) for i in range(3))

    # Slab: half-thickness over the mid-plane grid (negative outside the footprint), minus |c|.
    min_thickness = config.min_thickness_voxels * voxel
    signed_thickness = np.where(mask, np.maximum(thickness, min_thickness), -outside_px * px_to_world)
    plane_pts = a[:, None, None] * lateral + b[None, :, None] * WORLD_UP
    pu, pv, _ = proj.project(plane_pts)
    half = _sample(signed_thickness, pu, pv)
    if config.cross_section == "discs":  # union of horizontal discs centred on the mid-plane, per height b
        inside = half > 0
        radius = np.where(inside, half, 0.0)
        q = (radius[:, None, :] ** 2 - (a[:, None] - a[None, :])[:, :, None] ** 2).max(axis=0)
        union = np.sign(q) * np.sqrt(np.abs(q))
        half = np.where(inside, np.maximum(union, half), np.minimum(union, half))
    slab = half[:, :, None] - np.abs(c)[None, None, :]

    # Cone: signed distance to the silhouette edge, in world units at each voxel's depth (in slices: memory). With
    # a solid of revolution, the carved slab only fills the part of the silhouette that solid leaves uncovered.
    leftover = _opened(mask & ~covered, round(LEFTOVER_OPENING * max(mask.shape))) if revolution else mask
    cone_edge = ndimage.distance_transform_edt(leftover) - ndimage.distance_transform_edt(~leftover)
    field = slab.copy() if mirror is not None else slab
    for i in range(0, len(a), CONE_SLICE):
        points = plane_pts[i:i + CONE_SLICE, :, None] + c[None, None, :, None] * normal
        u, v, z = proj.project(points)
        cone = _cone(cone_edge, u, v, z, focal)
        field[i:i + CONE_SLICE] = np.minimum(slab[i:i + CONE_SLICE], cone if leftover.any() else -voxel)
        if mirror is not None:  # two-view visual hull: the photo's cone and the mirrored camera's
            reflected = points - 2.0 * (points @ mirror)[..., None] * mirror
            mu, mv, mz = proj.project(reflected)
            mirrored_cone = _cone(cone_edge, mu, mv, mz, focal)
            across = np.abs(points @ mirror)  # distance to the symmetry plane; the slab lies along it
            sym_slab = np.maximum(_sample(signed_thickness, u, v), _sample(signed_thickness, mu, mv)) - across
            field[i:i + CONE_SLICE] = np.minimum(np.minimum(cone, mirrored_cone), sym_slab)
        if revolution:  # the solid, trimmed to the silhouette's own cone (its table is sampled at finite angles)
            solid = np.minimum(revolution.field(points, -voxel), _cone(signed_edge_px, u, v, z, focal))
            field[i:i + CONE_SLICE] = np.maximum(field[i:i + CONE_SLICE], solid)
    if mirror is not None:
        _add_uncovered(field, slab, lo, voxel, axes, proj, mask, plane_pts, c)
    _close_grid(field, voxel)
    if config.ground_contact:
        hit, points = _first_hits(field, lo, voxel, axes, proj, mask)
        ground = float((points[hit] @ WORLD_UP).min()) if hit.any() else float(lo[1])
        field = np.minimum(field, (b - ground)[None, :, None])
    if field.max() <= 0:
        raise ReconstructionError(f"{image.name}: the carved volume is empty; an object thinner than one voxel "
                                  f"({config.resolution} along its longest side) carves to nothing: raise "
                                  "reconstruct.backend.fallback.resolution")

    grid_verts, faces, _, _ = marching_cubes(field.astype(np.float32), level=0.0, spacing=(voxel,) * 3)
    verts = (grid_verts + lo) @ axes
    mesh = _largest_components(trimesh.Trimesh(verts, faces, process=True), config.min_component_fraction)
    return mesh, voxel, revolution is not None, mirror


def _add_uncovered(field: np.ndarray, slab: np.ndarray, lo: np.ndarray, voxel: float, axes: np.ndarray,
                   proj: _Projector, mask: np.ndarray, plane_pts: np.ndarray, c: np.ndarray) -> None:
    """Add to ``field`` (in place) the mid-plane carving (``slab`` within the cone) of the silhouette part that the
    mirrored hull leaves uncovered (appendages far from the symmetry plane: ears, a seat's sides), so the input
    silhouette stays whole (step 8 of the module docstring)."""
    hit, _ = _first_hits(field, lo, voxel, axes, proj, mask, stride=1)
    uncovered = np.zeros_like(mask)
    uncovered[mask] = ~hit
    rest = _opened(uncovered, round(LEFTOVER_OPENING * max(mask.shape)))
    if not rest.any():
        return
    rest_edge = ndimage.distance_transform_edt(rest) - ndimage.distance_transform_edt(~rest)
    for i in range(0, len(plane_pts), CONE_SLICE):
        points = plane_pts[i:i + CONE_SLICE, :, None] + c[None, None, :, None] * axes[2]
        u, v, z = proj.project(points)
        cone = _cone(rest_edge, u, v, z, float(proj.K[0, 0]))
        field[i:i + CONE_SLICE] = np.maximum(field[i:i + CONE_SLICE], np.minimum(slab[i:i + CONE_SLICE], cone))


def _fit_revolution(mask: np.ndarray, signed_edge_px: np.ndarray, hits: np.ndarray, proj: _Projector,
                    axes: np.ndarray, config: CarvingSettings) -> _Revolution | None:
    """The solid of revolution about the vertical axis under the silhouette's mirror axis (None when switched off),
    tabulated at ``config.resolution`` heights over the mid-plane footprint and as many radii."""
    if config.revolution == "off":
        return None
    axis_a = _mirror_axis_lateral(mask, proj, axes[2], axes[0])
    heights = np.linspace(hits[:, 1].min(), hits[:, 1].max(), config.resolution)
    radii = np.linspace(0.0, float(np.abs(hits[:, 0] - axis_a).max()), config.resolution)
    return _Revolution(signed_edge_px + REVOLUTION_SLACK_PX, proj, axes, axis_a, heights, radii)


def _close_grid(field: np.ndarray, voxel: float) -> np.ndarray:
    """Mark the grid's outer layer empty (keeps the marching-cubes surface closed); in place, returned."""
    field[[0, -1]], field[:, [0, -1]], field[:, :, [0, -1]] = -voxel, -voxel, -voxel
    return field


def _mirror_axis_lateral(mask: np.ndarray, proj: _Projector, normal: np.ndarray, lateral: np.ndarray) -> float:
    """Lateral world position of the silhouette's mirror axis: where its image column meets the mid-plane at the
    silhouette's middle row."""
    axis_u, _ = mirror_axis(mask)
    rows = np.flatnonzero(mask.any(axis=1))
    ray = proj.rays(np.array(axis_u), np.array((rows[0] + rows[-1] + 1) / 2.0))
    point = proj.center - (proj.center @ normal) / (ray @ normal) * ray
    return float(point @ lateral)


def _first_hits(field: np.ndarray, lo: np.ndarray, voxel: float, axes: np.ndarray, proj: _Projector,
                mask: np.ndarray, stride: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(hit [N], points [N,3]): march the rays of every ``stride``-th silhouette pixel through ``field`` (grid axes
    ``axes`` rows, origin ``lo``, cubic ``voxel``); whether each enters the volume, and where (world)."""
    vs, us = np.nonzero(mask[::stride, ::stride])
    dirs = proj.rays(us * stride + 0.5, vs * stride + 0.5)
    corners = lo + voxel * (np.array(field.shape) - 1) * np.array(np.meshgrid([0, 1], [0, 1], [0, 1])).reshape(3, -1).T
    depths = (corners @ axes - proj.center) @ proj.R[2]
    steps = np.arange(depths.min(), depths.max(), 0.5 * voxel)
    points = proj.center + steps[None, :, None] * dirs[:, None, :]
    grid = ((points @ axes.T) - lo) / voxel
    inside = ndimage.map_coordinates(field, grid.reshape(-1, 3).T, order=1, cval=-1.0).reshape(grid.shape[:2]) > 0
    return inside.any(axis=1), points[np.arange(len(points)), np.argmax(inside, axis=1)]


def _largest_components(mesh: trimesh.Trimesh, min_fraction: float) -> trimesh.Trimesh:
    """Outward-facing mesh without components smaller than ``min_fraction`` of the faces."""
    parts = mesh.split(only_watertight=False)
    if len(parts) > 1:
        keep = [p for p in parts if len(p.faces) >= min_fraction * len(mesh.faces)]
        mesh = trimesh.util.concatenate(keep)
    faces = mesh.faces[:, ::-1] if mesh.volume < 0 else mesh.faces  # outward winding; fresh mesh, fresh caches
    return trimesh.Trimesh(mesh.vertices, faces, process=False)


def contour_colours(rgb: np.ndarray, mask: np.ndarray, band: float, sigma: float) -> np.ndarray:
    """[H,W,3]: the colours of the silhouette's rim band (pixels at most ``band`` x the largest inscribed radius
    from the edge) diffused over the whole canvas by normalised Gaussian convolution, sigma ``sigma`` x the
    silhouette's larger side (see step 7 of the module docstring)."""
    inside = ndimage.distance_transform_edt(mask)
    rim = mask & (inside <= max(band * float(inside.max()), 1.0))
    ys, xs = np.nonzero(mask)
    width = sigma * float(max(np.ptp(ys), np.ptp(xs)) + 1)
    weight = ndimage.gaussian_filter(rim.astype(np.float64), width, mode="constant")
    sums = np.stack([ndimage.gaussian_filter(np.where(rim, rgb[..., k], 0.0), width, mode="constant")
                     for k in range(3)], -1)
    return sums / np.maximum(weight, 1e-12)[..., None]


def _vertex_colours(mesh: trimesh.Trimesh, image: ObjectImage, mask: np.ndarray, proj: _Projector,
                    normal: np.ndarray, tolerance: float, contour: CarvingSettings | None,
                    mirror: np.ndarray | None = None) -> np.ndarray:
    """Photo colours for visible vertices; for hidden ones mirrored colours, mixed with the rim's diffused colours
    by ``contour``'s settings when given (step 7 of the module docstring); with a symmetry plane's unit normal
    ``mirror`` (through the origin), hidden vertices whose mirror image the camera sees take its photo colour."""
    _, (iy, ix) = ndimage.distance_transform_edt(~mask, return_indices=True)
    filled = image.rgb[iy, ix].astype(np.float64)
    verts = np.asarray(mesh.vertices, dtype=np.float64)
    visible = _seen(mesh, proj, verts, tolerance)
    mirrored = verts - 2.0 * (verts @ normal)[:, None] * normal
    u, v, _ = proj.project(np.where(visible[:, None], verts, mirrored))
    colours = np.stack([_sample(filled[..., k], u, v) for k in range(3)], -1)
    if contour is not None:
        diffused = contour_colours(image.rgb.astype(np.float64), mask, contour.contour_band, contour.contour_sigma)
        rim = np.stack([_sample(diffused[..., k], u[~visible], v[~visible]) for k in range(3)], -1)
        colours[~visible] = (1.0 - contour.contour_weight) * colours[~visible] + contour.contour_weight * rim
    if mirror is not None:  # the mirrored camera is a second real view: its colour where it sees the vertex
        hidden = np.flatnonzero(~visible)
        reflected = verts[hidden] - 2.0 * (verts[hidden] @ mirror)[:, None] * mirror
        seen = _seen(mesh, proj, reflected, tolerance)
        mu, mv, _ = proj.project(reflected[seen])
        colours[hidden[seen]] = np.stack([_sample(filled[..., k], mu, mv) for k in range(3)], -1)
    return colours.clip(0.0, 1.0).astype(np.float32)


def _seen(mesh: trimesh.Trimesh, proj: _Projector, points: np.ndarray, tolerance: float) -> np.ndarray:
    """[N]: whether the camera sees world ``points`` [N,3] on ``mesh`` (no surface more than ``tolerance`` world
    units in front of them along the ray)."""
    offsets = points - proj.center
    distance = np.linalg.norm(offsets, axis=1)
    origins = np.repeat(proj.center[None], len(points), axis=0)
    locations, ray_ids, _ = mesh.ray.intersects_location(origins, offsets / distance[:, None], multiple_hits=False)
    first_hit = np.full(len(points), np.inf)
    first_hit[ray_ids] = np.linalg.norm(locations - proj.center, axis=1)
    return distance <= first_hit + tolerance


CARVING = register(Backend("carving", "reconstruct", CarvingSettings,
                           lambda settings, context: lambda image, depth, camera: carve(image, depth, camera, settings),
                           description="upright silhouette + depth carving (weight-free)"))
_BACKEND_TYPE, _BACKEND_DEFAULT = backend_field("reconstruct", fallback="carving")


class ReconstructConfig(BaseModel):
    """Coarse-mesh reconstruction: the backend and its settings (``auto``: TripoSR when its weights are present,
    else carving)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: _BACKEND_TYPE = Field(_BACKEND_DEFAULT, description="'auto' | 'carving' | 'triposr', with its settings")


def run(image: ObjectImage, depth: DepthMap, camera: Camera, config: ReconstructConfig | None = None,
        backend: ReconstructBackend | None = None) -> MeshAsset:
    """Closed coloured mesh of the object in the world frame (+Z up, object about the origin), by ``backend``
    (what the run's selection built), or else by ``config.backend`` selected and built here on the CPU."""
    return (backend or build_stage_backend("reconstruct", config or ReconstructConfig()))(image, depth, camera)


def _opened(mask: np.ndarray, iterations: int) -> np.ndarray:
    """Binary opening (``iterations`` of the 4-neighbour cross); the mask itself when 0."""
    return ndimage.binary_opening(mask, iterations=iterations) if iterations else mask
