"""TripoSR as a ``reconstruct`` backend: (ObjectImage, DepthMap, Camera) -> coloured MeshAsset in our world frame.

Frames. TripoSR's output frame is x back (towards the input camera), y right, z up, with the input camera on
its +x axis at elevation 0 (the model sees every photo as level). Our world frame (:mod:`glimpse3d_core.types`)
is +Z up with the input camera on the +X side at the input elevation. The mesh is therefore rotated by the
input camera's orientation: TripoSR's x, y, z axes become the camera's back, right and up directions in the
world (from its OpenCV world-to-camera matrix: back = -row 2, right = row 0, up = -row 1). For a level camera
on +X this is the identity; an elevated camera tilts the mesh so that it looks upright in the world. Then the
mesh's bounding box is centred at the origin and scaled to a largest extent of 1.

The depth map is not used (TripoSR infers geometry from the image alone).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from glimpse3d_core.models.triposr.loader import load_triposr
from glimpse3d_core.models.triposr.mesh import FieldMesh, extract_mesh
from glimpse3d_core.models.triposr.model import TripoSR
from glimpse3d_core.models.triposr.preprocess import preprocess
from glimpse3d_core.models.triposr.settings import TripoSRReconstructConfig
from glimpse3d_core.types import Camera, DepthMap, MeshAsset, ObjectImage


def camera_rotation(camera: Camera) -> np.ndarray:
    """3x3 rotation taking TripoSR-frame vectors to the world: columns = the camera's back, right, up."""
    rows = np.asarray(camera.viewmat, dtype=np.float64)[:3, :3]
    return np.stack([-rows[2], rows[0], -rows[1]], axis=1)


def to_world(mesh: FieldMesh, camera: Camera) -> MeshAsset:
    """The TripoSR-frame mesh in our world frame, centred and scaled to a largest extent of 1."""
    vertices = mesh.vertices.astype(np.float64) @ camera_rotation(camera).T
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    extent = float((hi - lo).max())
    if extent <= 0.0:
        raise ValueError("the reconstructed mesh is degenerate (zero extent)")
    vertices = (vertices - 0.5 * (lo + hi)) / extent
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
        """Coloured mesh of ``image`` in our world frame (``depth`` unused; ``camera`` orients the result)."""
        del depth  # TripoSR needs no depth
        return to_world(self.mesh_in_model_frame(image), camera)
