"""Real spherical harmonics up to degree 3, evaluated to RGB the way 3DGS and gsplat do.

Basis order and signs are the ones of the INRIA 3DGS code (coefficient k of degree l at index l^2 + k); the
direction is the unit vector from the camera centre to the Gaussian's mean, in world coordinates. Colour is
``max(0, 0.5 + sum_k basis_k * coeff_k)`` (gsplat clamps at 0 only).
"""

from __future__ import annotations

import torch

from glimpse3d_core.types import SH_C0

MAX_SH_DEGREE = 3
_C1 = 0.4886025119029199
_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


def num_sh_bases(degree: int) -> int:
    return (degree + 1) ** 2


def sh_basis(dirs: torch.Tensor, degree: int) -> torch.Tensor:
    """Basis values [..., (degree+1)^2] at unit directions ``dirs`` [..., 3]."""
    if not 0 <= degree <= MAX_SH_DEGREE:
        raise ValueError(f"SH degree must be 0..{MAX_SH_DEGREE}, got {degree}")
    out = [torch.full_like(dirs[..., 0], SH_C0)]
    if degree >= 1:
        x, y, z = dirs.unbind(-1)
        out += [-_C1 * y, _C1 * z, -_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [
            _C2[0] * x * y,
            _C2[1] * y * z,
            _C2[2] * (2.0 * zz - xx - yy),
            _C2[3] * x * z,
            _C2[4] * (xx - yy),
        ]
    if degree >= 3:
        out += [
            _C3[0] * y * (3.0 * xx - yy),
            _C3[1] * x * y * z,
            _C3[2] * y * (4.0 * zz - xx - yy),
            _C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy),
            _C3[4] * x * (4.0 * zz - xx - yy),
            _C3[5] * z * (xx - yy),
            _C3[6] * x * (xx - 3.0 * yy),
        ]
    return torch.stack(out, dim=-1)


def sh_to_rgb(coeffs: torch.Tensor, dirs: torch.Tensor | None, degree: int) -> torch.Tensor:
    """RGB ``max(0, 0.5 + SH)`` from ``coeffs`` [N,K,3] (K >= (degree+1)^2) seen along ``dirs``.

    ``dirs`` [..., N, 3] (need not be unit length; ignored for degree 0) gives [..., N, 3]; for degree 0 the
    result is [N,3] (view independent).
    """
    n_bases = num_sh_bases(degree)
    if coeffs.shape[-2] < n_bases:
        raise ValueError(f"SH degree {degree} needs {n_bases} coefficients, the Gaussians have {coeffs.shape[-2]}")
    if degree == 0:
        return torch.clamp_min(SH_C0 * coeffs[:, 0] + 0.5, 0.0)
    unit = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    basis = sh_basis(unit, degree)  # [..., N, B]
    return torch.clamp_min((basis[..., None] * coeffs[:, :n_bases]).sum(dim=-2) + 0.5, 0.0)
