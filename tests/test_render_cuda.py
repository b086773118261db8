"""gsplat (CUDA) against our PyTorch rasteriser on the same scene: images and gradients must agree."""

from __future__ import annotations

import pytest
import torch

from glimpse3d_core.cameras import orbit_rig
from glimpse3d_core.render import RenderOutput, rasterize
from glimpse3d_core.types import Gaussians
from tests.markers import CUDA_ONLY

pytestmark = CUDA_ONLY


def _scene(n: int = 3000, seed: int = 0) -> Gaussians:
    gen = torch.Generator().manual_seed(seed)
    return Gaussians(
        means=(torch.rand(n, 3, generator=gen) - 0.5) * 0.8,
        quats=torch.randn(n, 4, generator=gen),
        log_scales=torch.log(torch.rand(n, 3, generator=gen) * 0.03 + 0.004),
        opacity_logits=torch.randn(n, generator=gen) * 2,
        sh0=torch.randn(n, 1, 3, generator=gen) * 0.7,
        shN=torch.randn(n, 15, 3, generator=gen) * 0.1,
    ).to("cuda")


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / torch.mean((a - b) ** 2)))


def test_gsplat_and_torch_backends_agree_on_images_and_gradients():
    pytest.importorskip("gsplat")
    rig = orbit_rig(image_size=128).subset([0, 4, 9])
    viewmats, Ks = rig.torch("cuda")
    scene = _scene()
    results = {}
    for backend in ("gsplat", "torch"):
        params = {k: v.clone().requires_grad_(True) for k, v in scene.tensors().items()}
        out = rasterize(Gaussians(**params), viewmats, Ks, 128, 128, backend=backend, background=1.0)
        target = torch.linspace(0, 1, out.rgb.numel(), device="cuda").reshape(out.rgb.shape)
        ((out.rgb - target).abs().mean() + out.depth.mean()).backward()
        detached = RenderOutput(out.rgb.detach(), out.alpha.detach(), out.depth.detach(), out.info)
        results[backend] = (detached, {k: p.grad for k, p in params.items()})
    (a, grads_a), (b, grads_b) = results["gsplat"], results["torch"]
    assert a.alpha.mean() > 0.2
    assert _psnr(a.rgb, b.rgb) > 40
    assert _psnr(a.alpha, b.alpha) > 40
    covered = (a.alpha > 0.5) & (b.alpha > 0.5)
    assert (a.depth - b.depth)[covered].abs().median() < 1e-3
    for name in ("means", "quats", "log_scales", "opacity_logits", "sh0", "shN"):
        cos = torch.nn.functional.cosine_similarity(grads_a[name].flatten(), grads_b[name].flatten(), dim=0)
        assert cos > 0.95, f"{name}: gradient cosine similarity {cos:.4f}"
