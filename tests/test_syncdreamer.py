"""SyncDreamer: checkpoint layout, strict loading, geometry, sampler maths, pre/post-processing and a tiny end-to-end
run through the same code as the full model."""

from __future__ import annotations

import json
import math
from importlib import resources

import numpy as np
import pytest
import torch

from glimpse3d_core.cameras import syncdreamer16_rig
from glimpse3d_core.models.errors import CorruptWeightsError, MissingWeightsError
from glimpse3d_core.models.layout import check_layout
from glimpse3d_core.models.syncdreamer import (
    SamplerConfig,
    SyncDDIMSampler,
    SyncDreamer,
    SyncDreamerConfig,
    SyncDreamerMultiview,
    SyncDreamerMultiviewConfig,
    build_for_layout,
    load_syncdreamer,
)
from glimpse3d_core.models.syncdreamer.loader import build_from_state_dict
from glimpse3d_core.models.syncdreamer.preprocess import InvalidInputImageError, alpha_from_white, prepare_input
from glimpse3d_core.models.syncdreamer.volume import projection_matrices
from glimpse3d_core.types import ObjectImage
from tests.markers import cuda_only


@pytest.fixture(scope="module")
def reference() -> dict:
    text = (resources.files("glimpse3d_core.models") / "layouts" / "syncdreamer.json").read_text(encoding="utf-8")
    return json.loads(text)


@pytest.fixture(scope="module")
def tiny_model() -> SyncDreamer:
    torch.manual_seed(0)
    return SyncDreamer(SyncDreamerConfig.tiny()).eval()


def object_image(size: tuple[int, int] = (48, 40)) -> ObjectImage:
    h, w = size
    rgb = np.zeros((h, w, 3), np.float32)
    rgb[..., 0] = np.linspace(0.2, 0.9, w)[None]
    rgb[..., 2] = 0.3
    alpha = np.zeros((h, w), np.float32)
    alpha[8:40, 10:30] = 1.0
    return ObjectImage(rgb, alpha, "box")


def test_full_architecture_matches_the_checkpoint_layout():
    report = check_layout("syncdreamer")
    assert report.ok, report.summary()
    assert len(report.matched) == 1618


def test_strict_load_of_a_state_dict_with_the_checkpoint_shapes(reference):
    state = {k: torch.empty(shape, device="meta") for k, shape in reference["keys"].items()}
    model = build_from_state_dict(state)
    assert sum(p.numel() for p in model.parameters()) == reference["num_params"]
    missing_one = dict(state)
    missing_one.pop("model.diffusion_model.output_conditions.8.proj_out.5.weight")
    with pytest.raises(CorruptWeightsError, match=r"output_conditions\.8"):
        build_from_state_dict(missing_one)
    reshaped = dict(state)
    reshaped["cc_projection.weight"] = torch.empty(768, 771, device="meta")
    with pytest.raises(CorruptWeightsError, match="cc_projection"):
        build_from_state_dict(reshaped)


def test_depth_attention_follows_the_released_output_blocks():
    unet = build_for_layout().model.diffusion_model
    assert unet.condition_of_block == {3: 0, 4: 1, 5: 2, 6: 3, 7: 4, 8: 5, 9: 6, 10: 7, 11: 8}


def test_rig_buffers_equal_camera16(reference):
    cam = reference["camera_16_pkl"]
    model = SyncDreamer(SyncDreamerConfig.tiny())
    np.testing.assert_allclose(model.poses.numpy(), np.array(cam["poses_w2c_3x4"]), atol=1e-5)
    K64 = np.diag([64 / 256, 64 / 256, 1.0]) @ np.array(cam["K"])  # the tiny model works at 64 px
    np.testing.assert_allclose(model.Ks.numpy(), np.repeat(K64[None], 16, 0), atol=1e-4)
    wrapped = (np.deg2rad(cam["azimuth_deg"]) + math.pi) % (2 * math.pi) - math.pi
    np.testing.assert_allclose(np.cos(model.azimuth.numpy() - wrapped), 1.0, atol=1e-6)
    np.testing.assert_allclose(syncdreamer16_rig(256).viewmats[:, :3], np.array(cam["poses_w2c_3x4"]), atol=1e-5)


def test_viewpoint_embedding_uses_zero123_elevation_convention(tiny_model):
    emb = tiny_model.viewpoint_embedding(torch.tensor([math.radians(10.0)]))
    assert emb.shape == (1, 16, 4)
    np.testing.assert_allclose(emb[0, :, 0].numpy(), math.radians(10.0 - 30.0), atol=1e-6)
    np.testing.assert_allclose(emb[0, 4, 1:].numpy(), [1.0, 0.0, 0.0], atol=1e-6)  # 90°: sin 1, cos 0
    np.testing.assert_allclose(emb[0, 0, 1:].numpy(), [0.0, 1.0, 0.0], atol=1e-6)


def test_frustum_and_unprojection_geometry_agree(tiny_model):
    vol = tiny_model.spatial_volume
    poses, Ks = tiny_model.poses, tiny_model.Ks
    frustum = vol.frustum_grid(poses, Ks)  # [N, D, f, f, 3] world / L
    f = tiny_model.cfg.latent_size
    L = tiny_model.cfg.volume.spatial_volume_length
    P = projection_matrices(Ks, poses, f / tiny_model.cfg.image_size)
    points = frustum[3].reshape(-1, 3).T * L
    uvz = P[3, :3, :3] @ points + P[3, :3, 3:]
    uv = (uvz[:2] / uvz[2:]).T.reshape(frustum.shape[1], f, f, 2)
    pixels = torch.arange(f, dtype=torch.float32)
    cols, rows = torch.meshgrid(pixels, pixels, indexing="xy")
    torch.testing.assert_close(uv[..., 0], cols.expand_as(uv[..., 0]), atol=1e-3, rtol=0)
    torch.testing.assert_close(uv[..., 1], rows.expand_as(uv[..., 1]), atol=1e-3, rtol=0)
    # the world origin sits at the centre of every view: K's principal point, in grid_sample units
    grid = vol.unprojection_grid(poses, Ks)  # [N, V, V*V, 2]
    V = tiny_model.cfg.volume.spatial_volume_size
    assert V % 2 == 0
    centre_pixel = (f / 2) / ((f - 1) / 2) - 1
    mid = slice(V // 2 - 1, V // 2 + 1)  # the 8 vertices around the origin
    around_origin = grid.reshape(16, V, V, V, 2)[:, mid, mid, mid]
    torch.testing.assert_close(around_origin.mean(dim=(1, 2, 3)), torch.full((16, 2), centre_pixel), atol=2e-2, rtol=0)


def test_ddim_step_is_exact_for_the_true_noise(tiny_model):
    sampler = SyncDDIMSampler(tiny_model, SamplerConfig(steps=50, eta=0.0))
    assert sampler.timesteps.tolist() == list(range(1, 1000, 20))
    x0, eps = torch.randn(1, 16, 4, 8, 8), torch.randn(1, 16, 4, 8, 8)
    index = 30
    a, a_prev = float(sampler.alphas[index]), float(sampler.alphas_prev[index])
    x_t = a**0.5 * x0 + (1 - a) ** 0.5 * eps
    expected = a_prev**0.5 * x0 + (1 - a_prev) ** 0.5 * eps
    torch.testing.assert_close(sampler._step(x_t, eps, index, None), expected, atol=1e-5, rtol=1e-5)
    stochastic = SyncDDIMSampler(tiny_model, SamplerConfig(steps=50, eta=1.0))
    assert float(stochastic.sigmas[index]) > 0 and float(sampler.sigmas.abs().max()) == 0.0


def test_prepare_input_crops_the_object_to_crop_size():
    image = prepare_input(object_image(), 64, crop_size=50)
    assert image.shape == (1, 3, 64, 64) and image.min() >= -1 and image.max() <= 1
    not_white = (image[0] < 0.98).any(dim=0)
    rows, cols = torch.nonzero(not_white, as_tuple=True)
    assert int(rows.max() - rows.min() + 1) == 50  # the longer side (32 px tall box) becomes 50 px
    assert abs(float(rows.float().mean()) - 31.5) < 1.0 and abs(float(cols.float().mean()) - 31.5) < 1.0
    padded = prepare_input(object_image(), 64, crop_size=None)
    assert padded.shape == (1, 3, 64, 64)
    with pytest.raises(InvalidInputImageError, match="empty"):
        prepare_input(ObjectImage(np.zeros((8, 8, 3), np.float32), np.zeros((8, 8), np.float32)), 64, 50)
    nan = object_image()
    nan.rgb[0, 0, 0] = np.nan
    with pytest.raises(InvalidInputImageError, match="NaN"):
        prepare_input(nan, 64, 50)


def test_alpha_from_white_recovers_the_composite():
    rgb = np.ones((1, 16, 16, 3), np.float32)
    rgb[0, 2:14, 2:14] = [0.2, 0.4, 0.6]
    rgb[0, 6:10, 6:10] = 1.0  # white hole inside the object
    rgb[0, 1, 2:14] = 0.95  # soft edge
    straight, alpha = alpha_from_white(rgb, 0.02, 0.08)
    assert alpha[0, 0, 0] == 0.0 and alpha[0, 4, 4] == 1.0 and alpha[0, 7, 7] == 1.0
    assert 0.0 < alpha[0, 1, 5] < 1.0
    composite = straight * alpha[..., None] + (1 - alpha[..., None])
    np.testing.assert_allclose(composite, rgb, atol=1e-5)


def test_tiny_model_generates_16_views_through_the_sampler(tiny_model):
    config = SyncDreamerMultiviewConfig(sampler=SamplerConfig(steps=2, batch_view_num=16), crop_size=50, seed=1)
    backend = SyncDreamerMultiview(tiny_model, config)
    steps = []
    views = backend(object_image(), 20.0, progress=lambda i, n: steps.append((i, n)))
    assert steps == [(1, 2), (2, 2)]
    assert views.rgb.shape == (16, 64, 64, 3) and views.alpha.shape == (16, 64, 64) and views.depth is None
    assert np.isfinite(views.rgb).all() and views.rgb.min() >= 0 and views.rgb.max() <= 1
    np.testing.assert_allclose(views.rig.viewmats, syncdreamer16_rig(64).viewmats)
    assert views.rgb.std(axis=(1, 2, 3)).min() > 0  # every view decoded from its own latent


    def one_step(batch_view_num: int) -> np.ndarray:
        sampler = SamplerConfig(steps=1, batch_view_num=batch_view_num)
        return SyncDreamerMultiview(tiny_model, SyncDreamerMultiviewConfig(sampler, crop_size=50, seed=1))(
            object_image(), 20.0).rgb

    np.testing.assert_allclose(one_step(16), one_step(5), atol=1e-4)  # view batching does not change the result
    with pytest.raises(ValueError, match="elevation"):
        backend(object_image(), float("nan"))


def test_loader_reads_a_lightning_checkpoint_strictly(tmp_path, tiny_model):
    path = tmp_path / "syncdreamer-pretrain.ckpt"
    torch.save({"state_dict": tiny_model.state_dict()}, path)
    loaded = load_syncdreamer(tmp_path, "cpu", torch.float32, config=SyncDreamerConfig.tiny())
    for key, value in tiny_model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)
    half = load_syncdreamer(path, "cpu", torch.float16, config=SyncDreamerConfig.tiny())
    assert half.dtype == torch.float16 and half.alphas_cumprod.dtype == torch.float32
    with pytest.raises(CorruptWeightsError):
        load_syncdreamer(path, "cpu", torch.float32)  # the full architecture does not fit the tiny weights


def test_missing_checkpoint_names_the_download_command(tmp_path):
    with pytest.raises(MissingWeightsError, match="glimpse3d models download syncdreamer"):
        load_syncdreamer(tmp_path)
    with pytest.raises(MissingWeightsError, match="glimpse3d models download syncdreamer"):
        SyncDreamerMultiview.from_pretrained(tmp_path / "nothing.ckpt", device="cpu")


@cuda_only
def test_tiny_model_runs_in_fp16_on_cuda(tiny_model, tmp_path):
    path = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": tiny_model.state_dict()}, path)
    model = load_syncdreamer(path, "cuda", torch.float16, config=SyncDreamerConfig.tiny())
    views = SyncDreamerMultiview(model, SyncDreamerMultiviewConfig(sampler=SamplerConfig(steps=2), crop_size=50))(
        object_image(), 30.0
    )
    assert views.rgb.shape == (16, 64, 64, 3) and np.isfinite(views.rgb).all()
