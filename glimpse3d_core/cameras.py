"""Camera rigs: look-at poses and orbits around the object.

World frame: right-handed, +Z up, object at the origin. A camera on an orbit at azimuth ``a`` and elevation
``e`` (degrees) and distance ``d`` sits at ``d * (cos a cos e, sin a cos e, sin e)``; azimuth 0 is the +X side
and grows towards +Y. Poses are OpenCV world-to-camera matrices (x right, y down, z forward), so that the
world's +Z projects upwards in the image. This reproduces SyncDreamer's ``camera-16.pkl`` exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from glimpse3d_core.types import CameraRig

WORLD_UP = np.array([0.0, 0.0, 1.0])


@dataclass(frozen=True)
class OrbitSpec:
    """An orbit of ``num_views`` cameras at one elevation, evenly spaced in azimuth from ``azimuth0_deg``.

    ``focal_px`` is the focal length in pixels at ``image_size``; the principal point is the image centre.
    """

    num_views: int = 16
    elevation_deg: float = 30.0
    distance: float = 1.5
    focal_px: float = 280.0
    image_size: int = 256
    azimuth0_deg: float = 0.0

    @property
    def azimuths_deg(self) -> np.ndarray:
        return self.azimuth0_deg + np.arange(self.num_views) * (360.0 / self.num_views)


SYNCDREAMER16 = OrbitSpec()
"""SyncDreamer's 16-view rig: elevation 30°, azimuth 0..337.5° in 22.5° steps, distance 1.5, fx=fy=280 at 256 px
(lens 35 mm on a 32 mm sensor)."""


def intrinsics(focal_px: float, width: int, height: int) -> np.ndarray:
    """Pinhole K [3,3] with the principal point at the image centre."""
    return np.array(
        [[focal_px, 0.0, width / 2.0], [0.0, focal_px, height / 2.0], [0.0, 0.0, 1.0]], dtype=np.float64
    )


def orbit_position(azimuth_deg: float, elevation_deg: float, distance: float) -> np.ndarray:
    """Camera centre on the orbit (world frame, +Z up)."""
    a, e = np.deg2rad(azimuth_deg), np.deg2rad(elevation_deg)
    return distance * np.array([np.cos(a) * np.cos(e), np.sin(a) * np.cos(e), np.sin(e)])


def look_at(eye: np.ndarray, target: np.ndarray | None = None, up: np.ndarray = WORLD_UP) -> np.ndarray:
    """OpenCV world-to-camera 4x4 for a camera at ``eye`` looking at ``target`` with world ``up`` upwards."""
    target = np.zeros(3) if target is None else np.asarray(target, dtype=np.float64)
    eye = np.asarray(eye, dtype=np.float64)
    forward = target - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    norm = np.linalg.norm(right)
    if norm < 1e-8:  # looking straight along `up`: any right vector perpendicular to it will do
        right = np.cross(forward, np.array([1.0, 0.0, 0.0]) if abs(forward[0]) < 0.9 else np.array([0, 1.0, 0]))
        norm = np.linalg.norm(right)
    right /= norm
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])
    viewmat = np.eye(4)
    viewmat[:3, :3] = R
    viewmat[:3, 3] = -R @ eye
    return viewmat


def orbit_rig(spec: OrbitSpec = SYNCDREAMER16, image_size: int | None = None) -> CameraRig:
    """The rig of ``spec``, optionally rendered at another square ``image_size`` (focal scaled with it)."""
    size = spec.image_size if image_size is None else image_size
    focal = spec.focal_px * size / spec.image_size
    viewmats = [
        look_at(orbit_position(az, spec.elevation_deg, spec.distance)) for az in spec.azimuths_deg
    ]
    K = intrinsics(focal, size, size)
    return CameraRig(np.stack(viewmats), np.repeat(K[None], spec.num_views, axis=0), size, size)


def syncdreamer16_rig(image_size: int = 256) -> CameraRig:
    """SyncDreamer's camera-16 rig (view 0 is the input view)."""
    return orbit_rig(SYNCDREAMER16, image_size)


def turntable_rig(num_frames: int, spec: OrbitSpec = SYNCDREAMER16, image_size: int | None = None) -> CameraRig:
    """A full 360° orbit of ``num_frames`` views at the elevation and distance of ``spec``, starting at view 0."""
    return orbit_rig(
        OrbitSpec(num_frames, spec.elevation_deg, spec.distance, spec.focal_px, spec.image_size,
                  spec.azimuth0_deg),
        image_size,
    )


def rig_from_camera16_json(data: dict) -> CameraRig:
    """Build a rig from SyncDreamer's camera-16 table (``K``, ``w2c_3x4``) as stored in camera-16.json."""
    poses = np.asarray(data["w2c_3x4"], dtype=np.float64)
    viewmats = np.tile(np.eye(4), (len(poses), 1, 1))
    viewmats[:, :3, :4] = poses
    K = np.asarray(data["K"], dtype=np.float64)
    size = round(float(K[0, 2]) * 2)
    return CameraRig(viewmats, np.repeat(K[None], len(poses), axis=0), size, size)


def project_points(points, viewmats, Ks):
    """Project world points [N,3] into C cameras (torch tensors; viewmats [C,4,4], Ks [C,3,3]).

    Returns ``(uv [C,N,2], z [C,N])``: pixel coordinates (pixel centres at integer + 0.5, so pixel ``(r, c)`` holds
    ``floor(uv) == (c, r)``) and camera-space depth; points behind a camera get ``z <= 0`` and meaningless ``uv``.
    """
    cam = points[None] @ viewmats[:, :3, :3].transpose(1, 2) + viewmats[:, None, :3, 3]
    z = cam[..., 2]
    pix = cam @ Ks.transpose(1, 2)
    uv = pix[..., :2] / z.clamp_min(1e-8)[..., None]
    return uv, z
