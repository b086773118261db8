"""Image operations shared by the stages, the model backends and the metrics: SSIM and resizing.

Images are channel-last float arrays or tensors, [H,W], [H,W,C] or [N,H,W,C], values in [0,1] (straight or
premultiplied colour as the caller keeps it). Both functions are torch code, so they run on the images' device
and (SSIM) are differentiable.
"""

from __future__ import annotations

import functools
from typing import Literal, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03

ResizeMode = Literal["bilinear", "bicubic"]
BlurMethod = Literal["banded", "separable"]
Image = TypeVar("Image", np.ndarray, torch.Tensor)


def gaussian_taps(size: int, sigma: float, *, dtype: torch.dtype = torch.float32,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """Normalised 1-D Gaussian window [size] centred on the middle tap."""
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    taps = torch.exp(-(x**2) / (2 * sigma**2))
    return taps / taps.sum()


@functools.cache
def _blur_matrix(n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """[n, n - 10]: column j holds the 11 Gaussian taps on rows j..j+10, so ``x @ m`` blurs ``x``'s last axis of
    length ``n`` at every position whose window lies inside ("valid"). Built once per length, device and dtype."""
    taps = gaussian_taps(SSIM_WINDOW, SSIM_SIGMA, dtype=torch.float64)
    offset = torch.arange(n)[:, None] - torch.arange(n - SSIM_WINDOW + 1)[None, :]
    inside = (offset >= 0) & (offset < SSIM_WINDOW)
    return torch.where(inside, taps[offset.clamp(0, SSIM_WINDOW - 1)], 0.0).to(device=device, dtype=dtype)


@functools.cache
def _taps(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return gaussian_taps(SSIM_WINDOW, SSIM_SIGMA, dtype=torch.float64).to(device=device, dtype=dtype)


def _blur(stats: torch.Tensor, method: BlurMethod) -> torch.Tensor:
    """``stats`` [N,K,H,W] blurred by the 11x11 Gaussian window at the positions where it lies inside ("valid"):
    [N,K,H-10,W-10]. The window is separable, so both methods compute the same function up to rounding."""
    if method == "banded":
        height, width = stats.shape[-2:]
        return _blur_matrix(height, stats.device, stats.dtype).mT @ stats @ _blur_matrix(width, stats.device,
                                                                                         stats.dtype)
    if method != "separable":
        raise ValueError(f"unknown SSIM blur {method!r}; choose banded or separable")
    k, taps = stats.shape[1], _taps(stats.device, stats.dtype)
    rows = F.conv2d(stats, taps.view(1, 1, 1, -1).expand(k, 1, 1, SSIM_WINDOW), groups=k)
    return F.conv2d(rows, taps.view(1, 1, -1, 1).expand(k, 1, SSIM_WINDOW, 1), groups=k)


def ssim(a: torch.Tensor, b: torch.Tensor, *, data_range: float = 1.0,
         padding: Literal["valid", "reflect"] = "valid", blur: BlurMethod | None = None) -> torch.Tensor:
    """SSIM of each image pair of ``a`` and ``b`` [N,H,W,C] -> [N], differentiable.

    Wang et al.'s SSIM with a Gaussian window (11 taps, σ = 1.5), K1 = 0.01, K2 = 0.03, per-channel local
    statistics (population (co)variances, negative variances from rounding clipped to 0), averaged over the map
    and the channels. ``padding="valid"`` averages only the map positions whose window lies inside the image
    (= torchmetrics < 1.5 / scikit-image, which crop the 5-pixel border); ``"reflect"`` pads the images by
    reflection (edge pixel not repeated) and averages the full map (torchmetrics >= 1.5). Compute in float64 for
    metric figures (E[x²] - E[x]² cancels badly in float32); float32 is fine for a loss.

    ``blur`` applies the window to the five stacked moments, the same function up to rounding (3e-7 in float32):
    ``banded``, two products with banded matrices, or ``separable``, two 1-D depthwise convolutions; None takes the
    faster on the images' device: banded on CUDA (the optimisation loop on an H200: 445 it/s, separable 262, one
    11x11 convolution 357; research/results/gpu_speed.md), separable elsewhere (4 views of 256² forward + backward on
    2 CPU threads: research/bench_ssim.py).
    """
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"ssim expects two [N,H,W,C] tensors of one shape, got {tuple(a.shape)}, {tuple(b.shape)}")
    if min(a.shape[1:3]) < SSIM_WINDOW:
        raise ValueError(f"images of {tuple(a.shape[1:3])} are too small for an {SSIM_WINDOW}px SSIM window")
    n, _, _, c = a.shape
    x, y = a.permute(0, 3, 1, 2), b.permute(0, 3, 1, 2)
    stats = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # [N,5C,H,W]: one blur for all five
    if padding == "reflect":
        pad = SSIM_WINDOW // 2
        stats = F.pad(stats, (pad, pad, pad, pad), mode="reflect")
    stats = _blur(stats, blur or ("banded" if stats.is_cuda else "separable"))
    mu_x, mu_y, xx, yy, xy = stats.split(c, dim=1)
    var_x, var_y = (xx - mu_x**2).clamp_min(0.0), (yy - mu_y**2).clamp_min(0.0)
    cov = xy - mu_x * mu_y
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.reshape(n, -1).mean(1)


def resize(image: Image, size: int | tuple[int, int], *, mode: ResizeMode = "bilinear") -> Image:
    """``image`` [H,W], [H,W,C] or [N,H,W,C] resampled to ``size`` (height, width; an int: square), values
    clipped to [0,1]; a numpy array comes back as float32 numpy, a tensor as a tensor on its device.

    Antialiased (the filter widens when shrinking, so it averages over the source area): ``bilinear`` is a
    triangle filter, ``bicubic`` the a = -0.5 cubic, i.e. PIL's ``BILINEAR`` / ``BICUBIC`` resampling.
    """
    height, width = (size, size) if isinstance(size, int) else size
    t = torch.as_tensor(image, dtype=torch.float32) if isinstance(image, np.ndarray) else image
    if t.ndim not in (2, 3, 4):
        raise ValueError(f"resize expects [H,W], [H,W,C] or [N,H,W,C], got {tuple(t.shape)}")
    batch = t[None, ..., None] if t.ndim == 2 else t[None] if t.ndim == 3 else t  # [N,H,W,C]
    if batch.shape[1:3] != (height, width):
        batch = F.interpolate(batch.permute(0, 3, 1, 2), size=(height, width), mode=mode, antialias=True,
                              align_corners=False).permute(0, 2, 3, 1)
    shape = {2: (height, width), 3: (height, width, t.shape[-1]), 4: batch.shape}[t.ndim]
    out = batch.clamp(0.0, 1.0).reshape(shape)
    return np.ascontiguousarray(out.numpy()) if isinstance(image, np.ndarray) else out
