"""Multiview and enhance stages: the input photo becomes view 0 with the highest weight, the rig views follow."""

from __future__ import annotations

import numpy as np
import torch

from glimpse3d_core.cameras import syncdreamer16_rig
from glimpse3d_core.imaging import resize
from glimpse3d_core.input_camera import CANONICAL, SYNCDREAMER16_VIEW0
from glimpse3d_core.stages import enhance, multiview
from glimpse3d_core.types import Gaussians, ObjectImage, rgb_to_sh0

SIZE = 32


def blob(n: int = 200, seed: int = 0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * 0.15
    return Gaussians(means=means, quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
                     log_scales=torch.full((n, 3), float(np.log(0.05))), opacity_logits=torch.full((n,), 2.0),
                     sh0=rgb_to_sh0((means + 0.5).clamp(0, 1))[:, None])


def photo(size: int = 2 * SIZE) -> ObjectImage:
    rng = np.random.default_rng(0)
    alpha = np.zeros((size, size), np.float32)
    alpha[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1
    return ObjectImage(rng.random((size, size, 3)).astype(np.float32), alpha)


def test_known_camera_replaces_rig_view0():
    cfg = multiview.MultiviewConfig(image_size=SIZE, input_weight=5.0)
    image = photo()
    views = multiview.run(blob(), image, SYNCDREAMER16_VIEW0.camera(2 * SIZE), cfg)
    rig = syncdreamer16_rig(SIZE)
    assert len(views) == 16
    np.testing.assert_allclose(views.rig.viewmats, rig.viewmats, atol=1e-6)
    np.testing.assert_allclose(views.rig.Ks, rig.Ks, atol=1e-4)
    assert views.weights[0] == 5.0 and np.all(views.weights[1:] == 1.0)
    np.testing.assert_allclose(views.alpha[0], resize(image.alpha, SIZE), atol=1e-6)
    assert views.alpha[1:].max() > 0.5  # the rig views are renders of the Gaussians
    assert views.depth is not None and views.depth[1:].max() > 1.0


def test_unknown_camera_is_prepended():
    cfg = multiview.MultiviewConfig(image_size=SIZE)
    camera = CANONICAL.camera(2 * SIZE)
    views = multiview.run(blob(), photo(), camera, cfg)
    assert len(views) == 17
    np.testing.assert_allclose(views.rig.viewmats[0], camera.viewmat, atol=1e-6)
    np.testing.assert_allclose(views.rig.viewmats[1:], syncdreamer16_rig(SIZE).viewmats, atol=1e-6)
    assert views.weights.argmax() == 0


def test_enhance_identity_keeps_views():
    cfg = multiview.MultiviewConfig(image_size=SIZE)
    views = multiview.run(blob(), photo(), SYNCDREAMER16_VIEW0.camera(SIZE), cfg)
    assert enhance.run(views, photo(), enhance.EnhanceConfig()) is views
