"""Typed containers for the data that flows between stages.

Conventions (written once, here and in :mod:`glimpse3d_core.cameras`):

* **World frame**: right-handed, **+Z up** (SyncDreamer's camera-16 rig, TripoSR, the GSO protocol). The object
  is centred at the origin with its largest bounding-box extent equal to 1. The input photo is view 0 of the
  rig: its camera sits on the +X side at the input elevation and looks at the origin. glTF exports convert to
  glTF's +Y up at write time only.
* **Cameras**: OpenCV axes (x right, y down, z forward); ``viewmat`` is the 4x4 world-to-camera matrix and
  ``K`` the 3x3 pinhole intrinsics in pixels, pixel centres at integer + 0.5 (the form gsplat takes).
* **Depth**: camera-space z (along the optical axis), in world units; 0 where there is no surface.
* **Images**: float32 RGB in [0, 1], *straight* (not premultiplied) colour, with a separate alpha in [0, 1].
  Composite on a background only at the edge of a model that expects one (each backend says which).
* **Gaussians**: ``means`` [N,3], ``quats`` [N,4] (w, x, y, z; need not be normalised), ``log_scales`` [N,3],
  ``opacity_logits`` [N], SH coefficients ``sh0`` [N,1,3] and ``shN`` [N,K,3] with K = (degree+1)^2 - 1.
  RGB = 0.5 + C0 * sh0 with C0 = :data:`SH_C0`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import numpy as np
import torch

SH_C0 = 0.28209479177387814
"""Zeroth-order real spherical-harmonic constant: colour = 0.5 + SH_C0 * sh0."""


def rgb_to_sh0(rgb: torch.Tensor) -> torch.Tensor:
    """Map RGB in [0,1] (..., 3) to the DC SH coefficient."""
    return (rgb - 0.5) / SH_C0


def sh0_to_rgb(sh0: torch.Tensor) -> torch.Tensor:
    """Map the DC SH coefficient (..., 3) to RGB (not clamped)."""
    return sh0 * SH_C0 + 0.5


@dataclass
class ObjectImage:
    """A photo of one object with its foreground mask.

    ``rgb`` [H,W,3] float32 straight colour in [0,1]; ``alpha`` [H,W] float32 in [0,1] (1 = object).
    """

    rgb: np.ndarray
    alpha: np.ndarray
    name: str = "image"

    def __post_init__(self) -> None:
        if self.rgb.ndim != 3 or self.rgb.shape[2] != 3:
            raise ValueError(f"rgb must be [H,W,3], got {self.rgb.shape}")
        if self.alpha.shape != self.rgb.shape[:2]:
            raise ValueError(f"alpha {self.alpha.shape} does not match rgb {self.rgb.shape[:2]}")

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return self.rgb.shape[0], self.rgb.shape[1]

    def composite(self, background: float = 1.0) -> np.ndarray:
        """RGB composited over a uniform grey level ``background`` (1.0 = white)."""
        a = self.alpha[..., None]
        return self.rgb * a + background * (1.0 - a)


@dataclass
class DepthMap:
    """Per-pixel depth for one view.

    ``depth`` [H,W] float32 camera-space z in world units when ``metric`` is True; otherwise a relative depth
    (larger = farther, defined up to an unknown positive scale and shift). ``valid`` [H,W] bool marks pixels that
    hold a surface.
    """

    depth: np.ndarray
    valid: np.ndarray
    metric: bool = False


@dataclass
class Camera:
    """One pinhole camera: ``viewmat`` [4,4] world-to-camera (OpenCV axes), ``K`` [3,3] in pixels."""

    viewmat: np.ndarray
    K: np.ndarray
    width: int
    height: int

    @property
    def camtoworld(self) -> np.ndarray:
        return np.linalg.inv(self.viewmat)

    @property
    def center(self) -> np.ndarray:
        """Camera centre in world coordinates."""
        return self.camtoworld[:3, 3]


@dataclass
class CameraRig:
    """C cameras sharing one image size: ``viewmats`` [C,4,4] world-to-camera, ``Ks`` [C,3,3] in pixels."""

    viewmats: np.ndarray
    Ks: np.ndarray
    width: int
    height: int

    def __post_init__(self) -> None:
        self.viewmats = np.asarray(self.viewmats, dtype=np.float32).reshape(-1, 4, 4)
        self.Ks = np.asarray(self.Ks, dtype=np.float32).reshape(-1, 3, 3)
        if len(self.viewmats) != len(self.Ks):
            raise ValueError(f"{len(self.viewmats)} viewmats but {len(self.Ks)} intrinsics")

    def __len__(self) -> int:
        return len(self.viewmats)

    def __getitem__(self, i: int) -> Camera:
        return Camera(self.viewmats[i], self.Ks[i], self.width, self.height)

    def subset(self, indices: list[int] | np.ndarray) -> CameraRig:
        idx = np.asarray(indices)
        return CameraRig(self.viewmats[idx], self.Ks[idx], self.width, self.height)

    def scaled(self, width: int, height: int) -> CameraRig:
        """The same rig at another image size (intrinsics scaled per axis)."""
        Ks = self.Ks.copy()
        Ks[:, 0] *= width / self.width
        Ks[:, 1] *= height / self.height
        return CameraRig(self.viewmats, Ks, width, height)

    def torch(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """(viewmats [C,4,4], Ks [C,3,3]) as float32 tensors on ``device``."""
        return (
            torch.as_tensor(self.viewmats, dtype=torch.float32, device=device),
            torch.as_tensor(self.Ks, dtype=torch.float32, device=device),
        )


@dataclass
class ViewSet:
    """Images of one object seen by a rig: ``rgb`` [C,H,W,3], ``alpha`` [C,H,W], optional ``depth`` [C,H,W]
    (camera z, 0 = background), all float32; ``weights`` [C] says how much each view counts when fitting."""

    rig: CameraRig
    rgb: np.ndarray
    alpha: np.ndarray
    depth: np.ndarray | None = None
    weights: np.ndarray | None = None

    def __post_init__(self) -> None:
        c, h, w = len(self.rig), self.rig.height, self.rig.width
        if self.rgb.shape != (c, h, w, 3):
            raise ValueError(f"rgb {self.rgb.shape} does not match rig ({c},{h},{w},3)")
        if self.alpha.shape != (c, h, w):
            raise ValueError(f"alpha {self.alpha.shape} does not match rig ({c},{h},{w})")
        if self.depth is not None and self.depth.shape != (c, h, w):
            raise ValueError(f"depth {self.depth.shape} does not match rig ({c},{h},{w})")
        if self.weights is None:
            self.weights = np.ones(c, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.rig)

    def composite(self, background: float = 1.0) -> np.ndarray:
        """RGB [C,H,W,3] composited over a uniform grey level (1.0 = white, the SyncDreamer protocol)."""
        a = self.alpha[..., None]
        return self.rgb * a + background * (1.0 - a)


@dataclass
class Gaussians:
    """A 3D Gaussian splat model (see the module docstring for units and conventions)."""

    means: torch.Tensor
    quats: torch.Tensor
    log_scales: torch.Tensor
    opacity_logits: torch.Tensor
    sh0: torch.Tensor
    shN: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0, 3))

    def __post_init__(self) -> None:
        n = self.means.shape[0]
        if self.shN.numel() == 0 and self.shN.shape[0] != n:
            self.shN = torch.zeros(n, 0, 3, dtype=self.means.dtype, device=self.means.device)
        expected = {
            "means": (n, 3),
            "quats": (n, 4),
            "log_scales": (n, 3),
            "opacity_logits": (n,),
            "sh0": (n, 1, 3),
        }
        for name, shape in expected.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(f"Gaussians.{name} has shape {got}, expected {shape}")
        if self.shN.ndim != 3 or self.shN.shape[0] != n or self.shN.shape[2] != 3:
            raise ValueError(f"Gaussians.shN has shape {tuple(self.shN.shape)}, expected ({n},K,3)")
        if self.sh_degree < 0:
            raise ValueError(f"shN has {self.shN.shape[1]} coefficients: not (d+1)^2-1 for any degree d<=3")

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def sh_degree(self) -> int:
        """Spherical-harmonic degree (0..3) implied by shN; -1 if shN has an invalid length."""
        return {0: 0, 3: 1, 8: 2, 15: 3}.get(self.shN.shape[1], -1)

    @property
    def colors(self) -> torch.Tensor:
        """View-independent RGB [N,3] from the DC term, clamped to [0,1]."""
        return sh0_to_rgb(self.sh0[:, 0]).clamp(0.0, 1.0)

    @property
    def scales(self) -> torch.Tensor:
        return self.log_scales.exp()

    @property
    def opacities(self) -> torch.Tensor:
        return torch.sigmoid(self.opacity_logits)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to(self, device: torch.device | str) -> Gaussians:
        return replace(self, **{k: v.to(device) for k, v in self.tensors().items()})

    def detach(self) -> Gaussians:
        return replace(self, **{k: v.detach() for k, v in self.tensors().items()})

    def select(self, mask: torch.Tensor) -> Gaussians:
        """The Gaussians where ``mask`` ([N] bool or index tensor) selects."""
        return replace(self, **{k: v[mask] for k, v in self.tensors().items()})

    @staticmethod
    def concat(parts: list[Gaussians]) -> Gaussians:
        names = [f.name for f in fields(Gaussians)]
        return Gaussians(**{k: torch.cat([getattr(p, k) for p in parts]) for k in names})

    def is_finite(self) -> bool:
        return all(bool(torch.isfinite(v).all()) for v in self.tensors().values())


@dataclass
class MeshAsset:
    """A triangle mesh in the world frame: ``vertices`` [V,3] float32, ``faces`` [F,3] int64,
    ``vertex_colors`` [V,3] float32 RGB in [0,1]."""

    vertices: np.ndarray
    faces: np.ndarray
    vertex_colors: np.ndarray

    def __post_init__(self) -> None:
        self.vertices = np.asarray(self.vertices, dtype=np.float32)
        self.faces = np.asarray(self.faces, dtype=np.int64)
        self.vertex_colors = np.asarray(self.vertex_colors, dtype=np.float32)
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3:
            raise ValueError(f"vertices must be [V,3], got {self.vertices.shape}")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3:
            raise ValueError(f"faces must be [F,3], got {self.faces.shape}")
        if self.vertex_colors.shape != self.vertices.shape:
            raise ValueError(f"vertex_colors {self.vertex_colors.shape} != vertices {self.vertices.shape}")
