"""TripoSR as a ``reconstruct`` backend: (ObjectImage, DepthMap, Camera) -> coloured MeshAsset in our world frame.

Frames. TripoSR's output frame is x back (towards the input camera), y right, z up: the model takes every
conditioning image for a view from its own assumed camera, level on its +x axis at distance
:data:`TRIPOSR_CAMERA_DISTANCE` with a :data:`TRIPOSR_FOVY_DEG` lens, looking at the origin (the default camera
of upstream's renderer). Our world frame (:mod:`glimpse3d_core.types`) is +Z up with the input camera on the +X
side at the input elevation, with its own lens and distance.

Placement (:func:`to_world`): the conditioning image shows a square window of our input image (the pre-processing
crops to the foreground and pads to ``foreground_ratio``: :func:`~glimpse3d_core.models.triposr.preprocess.framing`).
TripoSR's origin goes on our camera's ray through the window's centre, at the depth ``d`` of our world origin. Its
y and z axes become our camera's right and up, its x axis (towards its camera) points back along that ray: for a
centred window (the canonical camera re-frames every photo so) this is a rotation, and an elevated camera tilts the
mesh to stand upright in the world; for an off-centre window it is also a shear by the off-axis angle, which keeps
every point where the crop TripoSR saw shows it. The scale ``s`` makes the silhouette as large through our camera
as through TripoSR's in the conditioning image: a shape with half-extent ``a`` along the view axis and ``c`` across
it (an ellipsoid about the origin) seen from depth ``D`` with focal length ``f`` is ``f c / sqrt(D² - a²)`` high,
so ``f s c / sqrt(d² - s² a²) = f_T w c / sqrt(D_T² - a²)``, i.e. ``s = K d / sqrt(f² + K² a²)`` with
``K = f_T w / sqrt(D_T² - a²)`` (``f``: our focal length in pixels, ``w``: the window side in pixels, ``f_T``:
TripoSR's focal length per image side, ``D_T``: its camera distance, ``a``: the mesh's largest ``|x|``). With
TripoSR's own lens (``f = f_T w``) this gives ``s = d / D_T`` and our projection is TripoSR's view exactly; a wider
lens sees the object with stronger perspective, which no similarity can undo (tests/test_golden_triposr.py
measures the silhouette overlap for our canonical camera). The mesh's extent follows from the photo's framing:
for the canonical camera (re-framed at 0.85, distance chosen so that the framed object spans 1 world unit at the
origin) an object filling the frame comes out about 1 across, the world convention.

The depth map is not used (TripoSR infers geometry from the image alone).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from glimpse3d_core.models.triposr.loader import load_triposr
from glimpse3d_core.models.triposr.mesh import FieldMesh, extract_mesh
from glimpse3d_core.models.triposr.model import TripoSR
from glimpse3d_core.models.triposr.preprocess import framing, preprocess
from glimpse3d_core.models.triposr.settings import TripoSRReconstructConfig
from glimpse3d_core.types import Camera, DepthMap, MeshAsset, ObjectImage

TRIPOSR_CAMERA_DISTANCE = 1.9
TRIPOSR_FOVY_DEG = 40.0
"""TripoSR's assumed camera: distance from the origin and vertical field of view (upstream tsr/system.py
``render()`` defaults, the cameras of its training renders)."""
Window = tuple[float, float, float]
"""(centre x, centre y, side) of a square of the input image, in pixels (x right, y down, edges at integers)."""


def placement(camera: Camera, window: Window, depth_extent: float) -> tuple[np.ndarray, np.ndarray]:
    """(A, b) with world = A @ triposr + b for a conditioning image showing ``window`` of ``camera``'s image and a
    mesh whose largest ``|x|`` (TripoSR units) is ``depth_extent`` (module docstring): ``A``'s columns are the
    world directions of TripoSR's x, y and z (back along the window centre's ray, our camera's right, its up),
    times the scale; ``b`` is where TripoSR's origin goes."""
    viewmat = np.asarray(camera.viewmat, dtype=np.float64)
    K = np.asarray(camera.K, dtype=np.float64)
    rotation, translation = viewmat[:3, :3], viewmat[:3, 3]
    centre_x, centre_y, side = window
    ray = np.array([(centre_x - K[0, 2]) / K[0, 0], (centre_y - K[1, 2]) / K[1, 1], 1.0])  # camera z = 1
    depth = float(translation[2])  # of the world origin
    f_triposr = 0.5 / math.tan(math.radians(TRIPOSR_FOVY_DEG) / 2) * side
    k = f_triposr / math.sqrt(TRIPOSR_CAMERA_DISTANCE**2 - depth_extent**2)
    scale = k * depth / math.hypot(K[1, 1], k * depth_extent)
    axes_cam = np.stack([-ray, [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]], axis=1)
    return scale * rotation.T @ axes_cam, rotation.T @ (ray * depth - translation)


def to_world(mesh: FieldMesh, camera: Camera, window: Window) -> MeshAsset:
    """The TripoSR-frame mesh in our world frame, placed for a conditioning image showing ``window`` of
    ``camera``'s image (module docstring)."""
    vertices = mesh.vertices.astype(np.float64)
    linear, offset = placement(camera, window, float(np.abs(vertices[:, 0]).max()))
    vertices = vertices @ linear.T + offset
    return MeshAsset(vertices.astype(np.float32), mesh.faces, np.clip(mesh.colors, 0.0, 1.0))


class TripoSRReconstructor:
    """The TripoSR backend: loads the model once and reconstructs one image per call."""

    name = "triposr"

    def __init__(
        self,
        model: TripoSR | str | Path | None = None,
        config: TripoSRReconstructConfig | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        """``model``: a built :class:`TripoSR`, or where its weights are (see :func:`load_triposr`; None = the
        model store). ``device`` defaults to CUDA when present; ``dtype`` to fp16 on CUDA, fp32 elsewhere."""
        self.config = config or TripoSRReconstructConfig()
        if isinstance(model, TripoSR):
            self.model = model
        else:
            device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
            dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
            self.model = load_triposr(model, device, dtype)
        self.field = self.model.field(self.config.chunk_points)

    @property
    def device(self) -> torch.device:
        return self.model.decoder.layers[0].weight.device

    def scene_code(self, image: ObjectImage) -> torch.Tensor:
        """The triplanes [3, C, H, W] of one image."""
        weight = self.model.image_tokenizer.model.embeddings.patch_embeddings.projection.weight
        pixels = preprocess(image, self.model.config.cond_image_size, self.config.preprocess)
        return self.model(pixels[None].to(device=weight.device, dtype=weight.dtype))[0]

    def mesh_in_model_frame(self, image: ObjectImage) -> FieldMesh:
        """The mesh in TripoSR's frame (x back, y right, z up; within the cube of half-side ``radius``)."""
        return extract_mesh(
            self.field, self.model.decoder, self.scene_code(image),
            self.config.mc_resolution, self.config.density_threshold,
        )

    def reconstruct(self, image: ObjectImage, depth: DepthMap, camera: Camera) -> MeshAsset:
        """Coloured mesh of ``image`` in our world frame, placed for ``camera``, the camera of ``image`` (same
        pixel size); ``depth`` unused."""
        del depth  # TripoSR needs no depth
        if image.size != (camera.height, camera.width):
            raise ValueError(f"image {image.size} and camera {(camera.height, camera.width)} differ in size")
        window = framing(image.alpha, self.config.preprocess.foreground_ratio).window
        return to_world(self.mesh_in_model_frame(image), camera, window)
