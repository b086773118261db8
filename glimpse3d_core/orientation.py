"""Which way is up in an exported splat file, and rotating Gaussians between frames.

Internally the world is +Z up (see ``types.py``); only exports convert. ``UpAxis`` names the file's up direction:

* ``"-y"`` (the default of ``ExportConfig.up``): the INRIA/COLMAP camera convention (y down), in which
  SuperSplat, the INRIA SIBR viewer and most splat tools show a model upright. World (x, y, z) -> (x, -z, y).
* ``"y"``: OpenGL/glTF +Y up. World (x, y, z) -> (x, z, -y) (as GLB meshes are written).
* ``"z"``: our world frame unchanged.

All three are proper rotations about the x axis, so the object keeps its handedness. Rotating Gaussians turns
the means, the orientation quaternions and the view-dependent colour (SH degree >= 1) alike.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from glimpse3d_core.render.sh import sh_basis
from glimpse3d_core.types import Gaussians

UpAxis = Literal["-y", "y", "z"]
WORLD_TO_FILE: dict[str, np.ndarray] = {
    "z": np.eye(3),
    "-y": np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]]),
    "y": np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]]),
}
"""3x3 rotation taking a point of our +Z-up world into a file with that up axis."""
RDF_TO_RUB = np.diag([1.0, -1.0, -1.0])
"""The INRIA PLY's axes (x right, y down, z forward) into SPZ's (x right, y up, z back)."""
SH_FIT_DIRECTIONS = 256
"""Random unit directions on which the SH rotation of each band is solved (exact: rotations keep bands)."""


def world_to_file(up: str) -> np.ndarray:
    """The 3x3 rotation from our world into a file whose up axis is ``up``."""
    if up not in WORLD_TO_FILE:
        raise ValueError(f"up must be one of {sorted(WORLD_TO_FILE)}, got {up!r}")
    return WORLD_TO_FILE[up]


def sh_rotation(rotation: np.ndarray, degree: int) -> torch.Tensor:
    """Matrix M [K,K] over the K = (degree+1)² - 1 higher-order SH bases such that coefficients ``M @ c`` give,
    along direction d, the colour that ``c`` gives along R^T d (the colour of an object turned by R)."""
    dirs = torch.nn.functional.normalize(torch.randn(SH_FIT_DIRECTIONS, 3, generator=torch.Generator().manual_seed(0),
                                                     dtype=torch.float64), dim=1)
    rot = torch.as_tensor(rotation, dtype=torch.float64)
    basis = sh_basis(dirs, degree)[:, 1:]
    turned = sh_basis(dirs @ rot, degree)[:, 1:]  # rows: (R^T d)^T = d^T R
    return torch.linalg.lstsq(basis, turned).solution  # basis @ M = turned, so basis @ (M c) = turned @ c


def rotate_gaussians(gaussians: Gaussians, rotation: np.ndarray) -> Gaussians:
    """``gaussians`` turned by the 3x3 proper rotation ``rotation`` about the origin (float32, on CPU)."""
    g = gaussians.detach().to("cpu")
    rot = torch.as_tensor(rotation, dtype=torch.float32)
    turned = Rotation.from_matrix(rotation) * Rotation.from_quat(g.quats.double().numpy(), scalar_first=True)
    quats = torch.from_numpy(turned.as_quat(scalar_first=True)).float() * g.quats.norm(dim=1, keepdim=True)
    shN = g.shN
    if g.sh_degree > 0:
        shN = torch.einsum("kj,njc->nkc", sh_rotation(rotation, g.sh_degree).float(), g.shN)
    return Gaussians(means=g.means @ rot.T, quats=quats, log_scales=g.log_scales.clone(),
                     opacity_logits=g.opacity_logits.clone(), sh0=g.sh0.clone(), shN=shN)


def to_file_frame(gaussians: Gaussians, up: str) -> Gaussians:
    """``gaussians`` of our world expressed in a file whose up axis is ``up`` (on CPU)."""
    rotation = world_to_file(up)
    return gaussians.detach().to("cpu") if up == "z" else rotate_gaussians(gaussians, rotation)


def from_file_frame(gaussians: Gaussians, up: str) -> Gaussians:
    """Gaussians read from a file whose up axis is ``up``, turned into our world (on CPU)."""
    rotation = world_to_file(up).T
    return gaussians.detach().to("cpu") if up == "z" else rotate_gaussians(gaussians, rotation)


def exported_up(ply_path: str | os.PathLike[str]) -> str:
    """The up axis a Glimpse3D export wrote ``ply_path`` with: ``splat_up`` of the metrics.json beside it; "z"
    (our world, as exports were before ``export.up``) when there is none."""
    info = Path(ply_path).parent / "metrics.json"
    try:
        up = json.loads(info.read_text(encoding="utf-8")).get("splat_up", "z")
    except (OSError, ValueError, AttributeError):
        return "z"
    return up if up in WORLD_TO_FILE else "z"


def read_exported(ply_path: str | os.PathLike[str]) -> Gaussians:
    """The Gaussians of a Glimpse3D ``model.ply`` in our +Z-up world (on CPU): read, then turned from the up axis
    :func:`exported_up` finds beside it."""
    from glimpse3d_core.io.ply import read_ply  # here: io.ply imports io.spz, which imports this module

    return from_file_frame(read_ply(ply_path), exported_up(ply_path))


def file_to_world_quaternion(up: str, spz: bool = False) -> list[float]:
    """Rotation [x, y, z, w] (three.js order) taking a splat file written with ``up`` into our world; ``spz``: an
    SPZ file, which holds that frame flipped to RUB (:mod:`glimpse3d_core.io.spz`)."""
    to_file = RDF_TO_RUB @ world_to_file(up) if spz else world_to_file(up)
    return [float(v) for v in Rotation.from_matrix(to_file.T).as_quat()]
