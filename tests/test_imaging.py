"""The one SSIM and the one resize (glimpse3d_core/imaging.py) against their references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import structural_similarity

from glimpse3d_core.imaging import resize, ssim


@pytest.mark.parametrize(("mode", "pil_filter"), [("bilinear", Image.BILINEAR), ("bicubic", Image.BICUBIC)])
@pytest.mark.parametrize("size", [(40, 50), (200, 180), (97, 131)])
def test_resize_is_pils_filter(mode, pil_filter, size):
    """Antialiased torch resampling = PIL's (SyncDreamer's preprocessing resizes with PIL BICUBIC)."""
    image = (np.random.default_rng(0).random((97, 131)) * 0.6 + 0.2).astype(np.float32)
    reference = np.asarray(Image.fromarray(image, mode="F").resize(size[::-1], pil_filter))
    np.testing.assert_allclose(resize(image, size, mode=mode), reference, atol=2e-5)


def test_resize_keeps_layout_type_and_range():
    rgb = np.random.default_rng(1).random((3, 20, 30, 4)).astype(np.float32)
    out = resize(rgb, 10)
    assert out.shape == (3, 10, 10, 4) and out.dtype == np.float32 and 0.0 <= out.min() <= out.max() <= 1.0
    assert resize(rgb[0], (5, 7)).shape == (5, 7, 4) and resize(rgb[0, ..., 0], 8).shape == (8, 8)
    assert resize(torch.from_numpy(rgb), 10).shape == (3, 10, 10, 4)
    np.testing.assert_array_equal(resize(rgb[0], (20, 30)), rgb[0])  # same size: unchanged


def test_batched_ssim_is_per_image_and_differentiable():
    rng = np.random.default_rng(2)
    a = rng.random((3, 24, 20, 3))
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    x = torch.tensor(a, requires_grad=True)
    scores = ssim(x, torch.tensor(b))
    for i in range(3):
        reference = structural_similarity(a[i], b[i], gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                          data_range=1.0, channel_axis=2)
        assert float(scores[i].detach()) == pytest.approx(reference, abs=1e-10)
    scores.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="too small"):
        ssim(x[:, :8], x[:, :8])


@pytest.mark.parametrize("padding", ["valid", "reflect"])
def test_both_ssim_blurs_agree_with_scikit_image(padding):
    """The banded-matrix products (CUDA's default) and the separable convolutions (the CPU's) are one function:
    equal to each other in float32 and, in float64 with valid padding, to scikit-image; values and gradients."""
    rng = np.random.default_rng(3)
    a = rng.random((2, 31, 40, 3))
    b = np.clip(a + rng.normal(0, 0.2, a.shape), 0, 1)
    grads = {}
    for blur in ("banded", "separable"):
        x = torch.tensor(a, dtype=torch.float32, requires_grad=True)
        scores = ssim(x, torch.tensor(b, dtype=torch.float32), padding=padding, blur=blur)
        scores.sum().backward()
        grads[blur] = (scores.detach(), x.grad)
        wide = ssim(torch.tensor(a), torch.tensor(b), padding=padding, blur=blur)
        if padding == "valid":
            reference = structural_similarity(a[1], b[1], gaussian_weights=True, sigma=1.5,
                                              use_sample_covariance=False, data_range=1.0, channel_axis=2)
            assert float(wide[1]) == pytest.approx(reference, abs=1e-10)
    torch.testing.assert_close(grads["banded"][0], grads["separable"][0], atol=1e-6, rtol=0)
    torch.testing.assert_close(grads["banded"][1], grads["separable"][1], atol=1e-6, rtol=1e-4)
    with pytest.raises(ValueError, match="unknown SSIM blur"):
        ssim(torch.tensor(a), torch.tensor(b), blur="fft")
