"""The input photo's camera: view 0 of an orbit (azimuth 0, on the +X side, looking at the origin, +Z up).

A photo's camera is unknown, so the pipeline states one:

* **canonical** (unknown camera, the default): elevation 20° (between frontal product shots and SyncDreamer's
  30°), SyncDreamer's lens (fx = fy = 280 px at 256 px, field of view 49.1°), and the photo is re-framed (object
  centred, its larger bounding-box side = ``foreground_ratio`` of the canvas, as TripoSR and SyncDreamer expect).
  The distance is the one at which that re-framed silhouette spans :data:`CANONICAL_EXTENT` = 1 world unit at
  the origin: ``distance = focal_px / (foreground_ratio * reference_size)`` = 1.287, so the object's largest
  extent comes out near 1, the world convention.
* **known** (``syncdreamer16`` or explicit elevation/distance/focal): the photo keeps its framing (it is only
  padded to a square about its centre and resized, which leaves the principal point at the centre), so the
  reconstruction lies in that rig's world frame and renders of the result score view for view against ground
  truth. ``syncdreamer16`` is view 0 of SyncDreamer's camera-16 rig: elevation 30°, distance 1.5, fx = fy = 280
  at 256 px.

``focal_px`` is given at ``reference_size`` pixels across the (square) photo; at another canvas size it scales
with it (the photo's field of view is what is known, not its pixel count).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from glimpse3d_core.cameras import SYNCDREAMER16, intrinsics, look_at, orbit_position
from glimpse3d_core.types import Camera

CANONICAL_EXTENT = 1.0
"""World-unit span, at the origin, of the re-framed silhouette's larger side under the canonical camera."""
CANONICAL_ELEVATION_DEG = 20.0
"""Elevation assumed for a photo whose camera is unknown."""
DEFAULT_FOREGROUND_RATIO = 0.85
"""Larger bounding-box side of the re-framed object / canvas side (TripoSR's and SyncDreamer's pre-processing)."""


class InputCameraSpec(BaseModel):
    """Where the input photo was taken from (view 0 of an orbit) and whether its framing is known."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    elevation_deg: float = Field(CANONICAL_ELEVATION_DEG, ge=-89.0, le=89.0,
                                 description="camera elevation above the horizontal plane through the origin (deg)")
    distance: float = Field(
        SYNCDREAMER16.focal_px / (DEFAULT_FOREGROUND_RATIO * SYNCDREAMER16.image_size) * CANONICAL_EXTENT,
        gt=0.0, description="camera distance from the origin (world units)")
    focal_px: float = Field(SYNCDREAMER16.focal_px, gt=0.0, description="focal length in pixels at reference_size")
    reference_size: int = Field(SYNCDREAMER16.image_size, gt=0, description="photo side (px) that focal_px refers to")
    keep_framing: bool = Field(False, description="True: the photo's framing is known and kept; False: re-frame it")
    foreground_ratio: float = Field(DEFAULT_FOREGROUND_RATIO, gt=0.0, le=1.0,
                                    description="object's larger side / canvas side when re-framing")

    def camera(self, size: int) -> Camera:
        """The input camera for a square canvas of ``size`` pixels (OpenCV, world +Z up, on the +X side)."""
        focal = self.focal_px * size / self.reference_size
        viewmat = look_at(orbit_position(0.0, self.elevation_deg, self.distance))
        return Camera(viewmat, intrinsics(focal, size, size), size, size)


CANONICAL = InputCameraSpec()
SYNCDREAMER16_VIEW0 = InputCameraSpec(
    elevation_deg=SYNCDREAMER16.elevation_deg, distance=SYNCDREAMER16.distance, focal_px=SYNCDREAMER16.focal_px,
    reference_size=SYNCDREAMER16.image_size, keep_framing=True,
)
PRESETS: dict[str, InputCameraSpec] = {"canonical": CANONICAL, "syncdreamer16": SYNCDREAMER16_VIEW0}


def preset(name: str) -> InputCameraSpec:
    """A named input camera (``canonical`` or ``syncdreamer16``)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown input camera {name!r}; choose one of {sorted(PRESETS)}") from None


def explicit(elevation_deg: float, distance: float, focal_px: float,
             reference_size: int = SYNCDREAMER16.image_size) -> InputCameraSpec:
    """A known camera: the photo keeps its framing."""
    return InputCameraSpec(elevation_deg=elevation_deg, distance=distance, focal_px=focal_px,
                           reference_size=reference_size, keep_framing=True)
