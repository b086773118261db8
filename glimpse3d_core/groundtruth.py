"""Ground-truth views of a textured mesh by the SyncDreamer GSO protocol (shared/data/syncdreamer_eval/PROTOCOL.md).

Recipe: load the mesh into our +Z-up world (:func:`glimpse3d_core.io.mesh.load_textured_mesh`, ``up`` names the
file's up axis), scale it so the largest bounding-box extent is 1, move the bounding-box centre to the origin,
turn it by ``rotate_z_deg`` about +Z (counter-clockwise seen from above; the protocol turns some GSO objects,
e.g. the chicken by 90° = -270°), then cast one ray per pixel centre (or ``supersample``² rays) of every camera of
the rig with trimesh's ray caster (Embree when ``embreex`` is installed).

Each view gives straight RGB (flat/unlit: the surface's base colour at the hit point, as under SyncDreamer's
even white environment light), alpha (fraction of the pixel's rays that hit) and camera-space z-depth of the
pixel-centre ray (0 where it misses). Colour: glTF base-colour texture × factor, OBJ ``map_Kd`` texture, else the
material colour, else interpolated vertex colours; textures sampled bilinearly at the interpolated UV (wrapping).
Every colour is returned sRGB-encoded (the library's display colours). glTF's ``baseColorFactor`` is linear, its
texture sRGB-encoded: the product is taken in linear light and encoded (:func:`gltf_base_color`).

Files as the protocol writes them: ``NNN.png`` (8-bit RGBA) and ``NNN-depth.png`` (uint16,
depth = v / 65535 * (2.4 - 0.6) + 0.6, background 65535).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh
from trimesh.visual.material import PBRMaterial, SimpleMaterial

from glimpse3d_core.cameras import syncdreamer16_rig
from glimpse3d_core.io.images import load_image, load_png16, save_png, save_png16
from glimpse3d_core.io.mesh import TexturedMesh, UpAxis, load_textured_mesh
from glimpse3d_core.types import CameraRig, ViewSet

DEPTH_MIN, DEPTH_MAX = 0.6, 2.4
"""Depth PNG encoding range of the protocol (world units)."""
DEPTH_VALID_MIN, DEPTH_VALID_MAX = 0.63, 2.37
"""Decoded depths outside this open interval are background (the protocol's validity test)."""
DEPTH_BACKGROUND = 65535
NUM_PROTOCOL_VIEWS = 16
DEFAULT_COLOR = np.array([1.0, 1.0, 1.0], dtype=np.float32)
"""Colour of a surface whose material has neither texture nor colour."""


@dataclass(frozen=True)
class GroundTruthConfig:
    """How to render protocol views of a mesh (defaults: the SyncDreamer GSO protocol)."""

    image_size: int = 256
    up: UpAxis = "z"
    rotate_z_deg: float = 0.0
    supersample: int = 1
    """Rays per pixel along each axis; alpha is the hit fraction, colour the mean over hits."""


def normalize_mesh(mesh: TexturedMesh, rotate_z_deg: float = 0.0) -> TexturedMesh:
    """Scale to unit largest bbox extent, centre the bbox at the origin, then rotate about +Z (degrees)."""
    lo, hi = mesh.bounds
    extent = float((hi - lo).max())
    if not extent > 0:
        raise ValueError("the mesh has zero extent")
    scale = np.diag([1.0 / extent] * 3 + [1.0])
    centre = trimesh.transformations.translation_matrix(-(lo + hi) / 2.0 / extent)
    rotate = trimesh.transformations.rotation_matrix(np.deg2rad(rotate_z_deg), [0.0, 0.0, 1.0])
    return mesh.transformed(rotate @ centre @ scale)


def _sample_texture(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear lookup of image [H,W,C] float at uv [N,2] (u right, v up, wrapping)."""
    h, w = image.shape[:2]
    x = (uv[:, 0] % 1.0) * w - 0.5
    y = (1.0 - uv[:, 1] % 1.0) * h - 0.5
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x0, x1, y0, y1 = x0 % w, (x0 + 1) % w, y0 % h, (y0 + 1) % h
    top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
    bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] -> linear light (IEC 61966-2-1)."""
    c = np.asarray(c, np.float32)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    """Linear light in [0, 1] -> sRGB-encoded values (IEC 61966-2-1)."""
    c = np.clip(np.asarray(c, np.float32), 0.0, 1.0)
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1.0 / 2.4) - 0.055).astype(np.float32)


def gltf_base_color(factor: np.ndarray, texel: np.ndarray | None = None) -> np.ndarray:
    """Display (sRGB) base colour of glTF's linear ``baseColorFactor`` (RGB) times its sRGB texture ``texel``
    [..., 3] (absent: the factor alone)."""
    linear = factor if texel is None else srgb_to_linear(texel) * factor
    return linear_to_srgb(linear)


def _base_color_texture(part: trimesh.Trimesh) -> np.ndarray | None:
    """The part's base-colour texture as float RGB [H,W,3] (glTF baseColorTexture or OBJ map_Kd), if any."""
    visual = part.visual
    if not isinstance(visual, trimesh.visual.TextureVisuals) or visual.uv is None:
        return None
    material = visual.material
    image = material.baseColorTexture if isinstance(material, PBRMaterial) else getattr(material, "image", None)
    return None if image is None else np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def _part_colors(part: trimesh.Trimesh, texture: np.ndarray | None, faces: np.ndarray, bary: np.ndarray
                 ) -> np.ndarray:
    """Base colour [N,3] of ``part`` (with its ``texture`` from :func:`_base_color_texture`) at barycentric
    points ``bary`` [N,3] of its local ``faces`` [N]."""
    visual = part.visual
    corner = part.faces[faces]  # [N,3] vertex indices
    if isinstance(visual, trimesh.visual.TextureVisuals):
        material = visual.material
        if isinstance(material, PBRMaterial):
            factor = np.ones(3, np.float32)
            if material.baseColorFactor is not None:
                factor = np.asarray(material.baseColorFactor, np.float32)[:3] / 255.0
            if texture is None:
                return np.broadcast_to(gltf_base_color(factor), (len(faces), 3))
            texels = _sample_texture(texture, (visual.uv[corner] * bary[..., None]).sum(1))
            return texels if np.all(factor == 1.0) else gltf_base_color(factor, texels)
        if texture is not None:
            return _sample_texture(texture, (visual.uv[corner] * bary[..., None]).sum(1))
        if isinstance(material, SimpleMaterial):
            return np.broadcast_to(np.asarray(material.diffuse, np.float32)[:3] / 255.0, (len(faces), 3))
    if isinstance(visual, trimesh.visual.ColorVisuals) and visual.kind == "vertex":
        colors = np.asarray(visual.vertex_colors, np.float32)[:, :3] / 255.0
        return (colors[corner] * bary[..., None]).sum(1)
    if isinstance(visual, trimesh.visual.ColorVisuals) and visual.kind == "face":
        return np.asarray(visual.face_colors, np.float32)[faces, :3] / 255.0
    return np.broadcast_to(DEFAULT_COLOR, (len(faces), 3))


def _pixel_rays(rig: CameraRig, view: int, supersample: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray origins [R,3], unit directions [R,3] and forward axis [3] for view ``view``; rays ordered
    (row, col, sub-row, sub-col) with sub-samples at the centres of a supersample x supersample grid."""
    w2c = rig.viewmats[view].astype(np.float64)
    K = rig.Ks[view].astype(np.float64)
    offsets = (np.arange(supersample) + 0.5) / supersample
    shape = (rig.height, rig.width, supersample, supersample)
    v = np.broadcast_to(np.arange(rig.height)[:, None, None, None] + offsets[None, None, :, None], shape).reshape(-1)
    u = np.broadcast_to(np.arange(rig.width)[None, :, None, None] + offsets[None, None, None, :], shape).reshape(-1)
    cam_dirs = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=1)
    R = w2c[:3, :3]
    dirs = cam_dirs @ R  # R^T applied to row vectors
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    centre = -R.T @ w2c[:3, 3]
    return np.broadcast_to(centre, dirs.shape), dirs, R[2]


def render_mesh_views(mesh: TexturedMesh, rig: CameraRig, supersample: int = 1) -> ViewSet:
    """Ray-cast ``mesh`` (already in the world frame) into every camera of ``rig``: RGB, alpha, z-depth."""
    if supersample < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    if not trimesh.ray.has_embree:
        raise RuntimeError("ground-truth rendering needs Embree: pip install 'glimpse3d[raycast]' (embreex)")
    geometry, face_offsets = mesh.geometry()
    intersector = geometry.ray
    textures = [_base_color_texture(part) for part in mesh.parts]
    h, w, s2 = rig.height, rig.width, supersample**2
    rgb = np.zeros((len(rig), h, w, 3), np.float32)
    alpha = np.zeros((len(rig), h, w), np.float32)
    depth = np.zeros((len(rig), h, w), np.float32)
    for view in range(len(rig)):
        origins, dirs, forward = _pixel_rays(rig, view, supersample)
        locations, ray_idx, tri_idx = intersector.intersects_location(origins, dirs, multiple_hits=False)
        colors = np.zeros((len(dirs), 3), np.float32)
        hit = np.zeros(len(dirs), bool)
        hit[ray_idx] = True
        part_of = np.searchsorted(face_offsets, tri_idx, side="right") - 1
        for p, part in enumerate(mesh.parts):
            sel = part_of == p
            if not sel.any():
                continue
            local = tri_idx[sel] - face_offsets[p]
            bary = trimesh.triangles.points_to_barycentric(part.triangles[local], locations[sel])
            colors[ray_idx[sel]] = _part_colors(part, textures[p], local, np.clip(bary, 0.0, 1.0))
        z = np.zeros(len(dirs), np.float32)
        z[ray_idx] = (locations - origins[ray_idx]) @ forward
        hit_px, colors_px = hit.reshape(h, w, s2), colors.reshape(h, w, s2, 3)
        count = hit_px.sum(-1)
        alpha[view] = count / s2
        rgb[view] = colors_px.sum(2) / np.maximum(count, 1)[..., None]
        # depth of the ray nearest the pixel centre that hit (the centre ray itself when supersample is odd)
        centre_order = np.argsort(_subpixel_distance(supersample))
        z_px = z.reshape(h, w, s2)[..., centre_order]
        hit_sorted = hit_px[..., centre_order]
        first = np.argmax(hit_sorted, axis=-1)
        depth[view] = np.where(count > 0, np.take_along_axis(z_px, first[..., None], -1)[..., 0], 0.0)
    rgb[alpha == 0] = 0.0
    return ViewSet(rig, rgb, alpha, depth)


def _subpixel_distance(supersample: int) -> np.ndarray:
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    dy, dx = np.meshgrid(offsets, offsets, indexing="ij")
    return (dx**2 + dy**2).reshape(-1)


def render_ground_truth(mesh_path: str | os.PathLike[str], config: GroundTruthConfig = GroundTruthConfig()) -> ViewSet:
    """The protocol's 16 views (SyncDreamer camera-16 rig at ``config.image_size``) of a mesh file."""
    mesh = normalize_mesh(load_textured_mesh(mesh_path, up=config.up), config.rotate_z_deg)
    return render_mesh_views(mesh, syncdreamer16_rig(config.image_size), config.supersample)


def encode_depth(depth: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Protocol depth PNG values: round((d - 0.6) / 1.8 * 65535), background (and out of range) 65535."""
    scaled = np.round((depth - DEPTH_MIN) / (DEPTH_MAX - DEPTH_MIN) * DEPTH_BACKGROUND)
    inside = valid & (scaled >= 0) & (scaled < DEPTH_BACKGROUND)
    return np.where(inside, scaled, DEPTH_BACKGROUND).astype(np.uint16)


def decode_depth(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(depth [H,W] float32 with 0 where invalid, valid mask) from protocol depth PNG values."""
    depth = values.astype(np.float32) / DEPTH_BACKGROUND * (DEPTH_MAX - DEPTH_MIN) + DEPTH_MIN
    valid = (depth > DEPTH_VALID_MIN) & (depth < DEPTH_VALID_MAX)
    return np.where(valid, depth, 0.0).astype(np.float32), valid


def view_filename(index: int, depth: bool = False) -> str:
    return f"{index:03d}-depth.png" if depth else f"{index:03d}.png"


def write_protocol_views(out_dir: str | os.PathLike[str], views: ViewSet) -> list[Path]:
    """Write NNN.png (RGBA) and, when the view set has depth, NNN-depth.png (protocol encoding)."""
    out = Path(out_dir)
    written = []
    for i in range(len(views)):
        written.append(save_png(out / view_filename(i), views.rgb[i], views.alpha[i]))
        if views.depth is not None:
            encoded = encode_depth(views.depth[i], views.depth[i] > 0)
            written.append(save_png16(out / view_filename(i, depth=True), encoded))
    return written


def read_protocol_views(
    folder: str | os.PathLike[str], count: int = NUM_PROTOCOL_VIEWS, rig: CameraRig | None = None
) -> ViewSet:
    """Read NNN.png (RGBA or RGB; alpha 1 where absent) and NNN-depth.png when all are present.

    The rig defaults to the SyncDreamer 16-view rig at the images' size.
    """
    folder = Path(folder)
    missing = [view_filename(i) for i in range(count) if not (folder / view_filename(i)).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder}: missing {', '.join(missing)}")
    rgbs, alphas = [], []
    for i in range(count):
        rgb, alpha = load_image(folder / view_filename(i))
        if rgbs and rgb.shape != rgbs[0].shape:
            raise ValueError(f"{folder / view_filename(i)}: size {rgb.shape[:2]} differs from {rgbs[0].shape[:2]}")
        rgbs.append(rgb)
        alphas.append(np.ones(rgb.shape[:2], np.float32) if alpha is None else alpha)
    h, w = rgbs[0].shape[:2]
    if rig is None:
        if h != w:
            raise ValueError(f"{folder}: protocol views are square, got {w}x{h}")
        rig = syncdreamer16_rig(h).subset(list(range(count)))
    depth = None
    depth_files = [folder / view_filename(i, depth=True) for i in range(count)]
    if all(f.is_file() for f in depth_files):
        depth = np.stack([decode_depth(load_png16(f))[0] for f in depth_files])
    return ViewSet(rig, np.stack(rgbs), np.stack(alphas), depth)
