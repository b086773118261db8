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
Image = TypeVar("Image", np.ndarray, torch.Tensor)


def gaussian_taps(size: int, sigma: float, *, dtype: torch.dtype = torch.float32,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """Normalised 1-D Gaussian window [size] centred on the middle tap."""
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    taps = torch.exp(-(x**2) / (2 * sigma**2))
    return taps / taps.sum()


@functools.cache
def _window(channels: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """[channels,1,11,11]: the 2-D Gaussian window for a depthwise convolution, built once per device and dtype.
    One 2-D convolution over the five stacked moments beat two separable 1-D passes and banded-matrix products in
    the optimisation loop on an H200 (research/gpu_pipeline.py --variants, research/results)."""
    taps = gaussian_taps(SSIM_WINDOW, SSIM_SIGMA, dtype=torch.float64)
    return (taps[:, None] * taps[None, :]).expand(channels, 1, SSIM_WINDOW, SSIM_WINDOW).to(device=device, dtype=dtype)


def ssim(a: torch.Tensor, b: torch.Tensor, *, data_range: float = 1.0,
         padding: Literal["valid", "reflect"] = "valid") -> torch.Tensor:
    """SSIM of each image pair of ``a`` and ``b`` [N,H,W,C] -> [N], differentiable.

    Wang et al.'s SSIM with a Gaussian window (11 taps, σ = 1.5), K1 = 0.01, K2 = 0.03, per-channel local
    statistics (population (co)variances, negative variances from rounding clipped to 0), averaged over the map
    and the channels. ``padding="valid"`` averages only the map positions whose window lies inside the image
    (= torchmetrics < 1.5 / scikit-image, which crop the 5-pixel border); ``"reflect"`` pads the images by
    reflection (edge pixel not repeated) and averages the full map (torchmetrics >= 1.5). Compute in float64 for
    metric figures (E[x²] - E[x]² cancels badly in float32); float32 is fine for a loss.
    """
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"ssim expects two [N,H,W,C] tensors of one shape, got {tuple(a.shape)}, {tuple(b.shape)}")
    if min(a.shape[1:3]) < SSIM_WINDOW:
        raise ValueError(f"images of {tuple(a.shape[1:3])} are too small for an {SSIM_WINDOW}px SSIM window")
    n, _, _, c = a.shape
    x, y = a.permute(0, 3, 1, 2), b.permute(0, 3, 1, 2)
    stats = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # [N,5C,H,W]: one depthwise blur for all five
    if padding == "reflect":
        pad = SSIM_WINDOW // 2
        stats = F.pad(stats, (pad, pad, pad, pad), mode="reflect")
    groups = stats.shape[1]
    stats = F.conv2d(stats, _window(groups, a.device, a.dtype), groups=groups)
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
