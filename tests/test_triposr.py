"""TripoSR: config, checkpoint loading (strict, key names), pre-processing, field/renderer/mesh geometry and frames,
and the tiny model end to end on CPU through the same code as the released one."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
import yaml

from glimpse3d_core.cameras import intrinsics, look_at, orbit_position, project_points
from glimpse3d_core.models.errors import CorruptWeightsError, MissingWeightsError
from glimpse3d_core.models.triposr import (
    EmptySurfaceError,
    TripoSR,
    TripoSRConfig,
    TripoSRReconstructConfig,
    TripoSRReconstructor,
    load_triposr,
)
from glimpse3d_core.models.triposr.config import ConfigFileError
from glimpse3d_core.models.triposr.decoder import NeRFDecoder
from glimpse3d_core.models.triposr.image_tokenizer import checkpoint_name
from glimpse3d_core.models.triposr.mesh import density_grid, extract_mesh
from glimpse3d_core.models.triposr.preprocess import EmptyForegroundError, InvalidImageError, framing, preprocess
from glimpse3d_core.models.triposr.reconstructor import (
    TRIPOSR_CAMERA_DISTANCE,
    TRIPOSR_FOVY_DEG,
    placement,
    to_world,
)
from glimpse3d_core.models.triposr.renderer import TriplaneField
from glimpse3d_core.models.triposr.synthetic import ellipsoid_field
from glimpse3d_core.types import Camera, DepthMap, ObjectImage

LAYOUT = Path(__file__).resolve().parents[1] / "glimpse3d_core" / "models" / "layouts" / "triposr.json"


def _camera(azimuth: float, elevation: float, size: int = 64) -> Camera:
    eye = orbit_position(azimuth, elevation, 2.0)
    return Camera(look_at(eye), intrinsics(60.0, size, size), size, size)


def _object_image(h: int = 48, w: int = 40) -> ObjectImage:
    rng = np.random.default_rng(0)
    rgb = rng.random((h, w, 3)).astype(np.float32)
    alpha = np.zeros((h, w), np.float32)
    alpha[6:40, 10:30] = 1.0
    return ObjectImage(rgb, alpha, "test")


def _save_checkpoint(folder: Path, config: TripoSRConfig, state: dict[str, torch.Tensor]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config.to_yaml_dict()))
    torch.save(state, folder / "model.ckpt")


# ---- config ----------------------------------------------------------------------------------------------------


def test_config_reads_the_released_config_values() -> None:
    released = json.loads(LAYOUT.read_text())["config"]  # config.yaml's values as recorded with the layout
    config = TripoSRConfig.from_yaml_dict(released)
    assert config == TripoSRConfig()
    assert config.backbone.inner_dim == 1024 and config.renderer.radius == 0.87
    assert TripoSRConfig.from_yaml_dict(TripoSRConfig.tiny().to_yaml_dict()) == TripoSRConfig.tiny()


@pytest.mark.parametrize(
    "change",
    [
        {"backbone_cls": "tsr.models.transformer.Other"},
        {"image_tokenizer": {"pretrained_model_name_or_path": "facebook/dino-vits8"}},
        {"decoder": {"in_channels": 100, "n_neurons": 64, "n_hidden_layers": 9, "activation": "silu"}},
        {"renderer": {"radius": 0.87, "unknown_option": 1}},
    ],
)
def test_config_refuses_what_we_do_not_implement(change: dict) -> None:
    raw = {**TripoSRConfig().to_yaml_dict(), **change}
    with pytest.raises(ConfigFileError):
        TripoSRConfig.from_yaml_dict(raw)


# ---- checkpoint names and loading -------------------------------------------------------------------------------


def test_vit_checkpoint_names() -> None:
    assert checkpoint_name("layers.3.attention.q_proj.weight") == "encoder.layer.3.attention.attention.query.weight"
    assert checkpoint_name("layers.11.mlp.fc2.bias") == "encoder.layer.11.output.dense.bias"
    assert checkpoint_name("layers.0.attention.o_proj.bias") == "encoder.layer.0.attention.output.dense.bias"
    for unchanged in ("encoder.layer.3.attention.attention.query.weight", "pooler.dense.weight", "layernorm.bias"):
        assert checkpoint_name(unchanged) == unchanged


def test_position_embeddings_are_resized_as_transformers_4_35_did() -> None:
    """scale_factor (grid + 0.1) / side, bicubic — TripoSR's training-time behaviour, not transformers 5's size=."""
    from transformers.models.vit.modeling_vit import ViTEmbeddings

    from glimpse3d_core.models.triposr.image_tokenizer import DinoImageTokenizer

    torch.manual_seed(0)
    embeddings = DinoImageTokenizer(TripoSRConfig.tiny().image_tokenizer).model.embeddings  # 3x3 trained grid
    tokens = torch.zeros(1, 17, 32)
    ours = embeddings.interpolate_pos_encoding(tokens, 64, 64)
    patch = embeddings.position_embeddings[:, 1:].reshape(1, 3, 3, 32).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(patch, scale_factor=(4.1 / 3, 4.1 / 3), mode="bicubic")
    torch.testing.assert_close(ours[:, 1:], expected.permute(0, 2, 3, 1).reshape(1, 16, 32))
    torch.testing.assert_close(ours[:, :1], embeddings.position_embeddings[:, :1])
    assert not torch.allclose(ours, ViTEmbeddings.interpolate_pos_encoding(embeddings, tokens, 64, 64))
    assert embeddings.interpolate_pos_encoding(torch.zeros(1, 10, 32), 48, 48) is embeddings.position_embeddings


def test_tiny_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = TripoSR(TripoSRConfig.tiny()).eval()
    state = source.checkpoint_state_dict()
    assert any(k.startswith("image_tokenizer.model.encoder.layer.0.attention.attention.query") for k in state)
    _save_checkpoint(tmp_path / "triposr", source.config, state)

    loaded = load_triposr(tmp_path / "triposr")
    for key, value in loaded.checkpoint_state_dict().items():
        assert torch.equal(value, state[key]), key
    assert load_triposr(tmp_path / "triposr" / "model.ckpt").config == source.config
    half = load_triposr(tmp_path / "triposr", dtype=torch.float16).checkpoint_state_dict()
    for key, value in half.items():  # fp16 transformer parts; the decoder stays float32, bit for bit
        expected = state[key] if key.startswith("decoder.") else state[key].half()
        assert value.dtype == expected.dtype and torch.equal(value, expected), key
    images = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(loaded(images), source(images))


def test_loading_is_strict(tmp_path: Path) -> None:
    source = TripoSR(TripoSRConfig.tiny())
    state = source.checkpoint_state_dict()
    extra = {**state, "backbone.extra.weight": torch.zeros(1)}
    _save_checkpoint(tmp_path / "extra", source.config, extra)
    with pytest.raises(CorruptWeightsError, match="unexpected"):
        load_triposr(tmp_path / "extra")
    missing = {k: v for k, v in state.items() if k != "decoder.layers.0.bias"}
    _save_checkpoint(tmp_path / "missing", source.config, missing)
    with pytest.raises(CorruptWeightsError, match=r"decoder\.layers\.0\.bias"):
        load_triposr(tmp_path / "missing")
    reshaped = {**state, "tokenizer.embeddings": torch.zeros(3, 32, 4, 4)}
    _save_checkpoint(tmp_path / "shape", source.config, reshaped)
    with pytest.raises(CorruptWeightsError, match=r"tokenizer\.embeddings"):
        load_triposr(tmp_path / "shape")


def test_missing_weights_name_the_download_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(MissingWeightsError, match="glimpse3d models download triposr"):
        load_triposr(tmp_path)
    monkeypatch.setenv("GLIMPSE3D_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(MissingWeightsError, match="glimpse3d models download triposr"):
        TripoSRReconstructor()  # the model store's copy, absent here
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(TripoSRConfig.tiny().to_yaml_dict()))
    with pytest.raises(MissingWeightsError, match=r"model\.ckpt"):
        load_triposr(tmp_path)


def test_full_size_strict_load_from_the_reference_layout(tmp_path: Path) -> None:
    """Every tensor of the released layout (549 keys, the checkpoint's own names) loads strictly into the full
    architecture. Each tensor is one random value broadcast to its shape (stride 0), so the 1.7 GB checkpoint
    takes a few kB on disk and in memory."""
    shapes = json.loads(LAYOUT.read_text())["keys"]
    generator = torch.Generator().manual_seed(0)
    state = {k: torch.randn(1, generator=generator).expand(shape) for k, shape in shapes.items()}
    folder = tmp_path / "full"
    _save_checkpoint(folder, TripoSRConfig(), state)
    assert (folder / "model.ckpt").stat().st_size < 2_000_000

    model = load_triposr(folder)
    loaded = model.checkpoint_state_dict()
    assert len(loaded) == len(shapes) == 549
    for key, value in state.items():
        assert loaded[key].shape == value.shape and loaded[key].flatten()[0] == value.flatten()[0], key


def test_backbone_block_equals_diffusers_basic_transformer_block() -> None:
    """TripoSR's block is diffusers' BasicTransformerBlock (layer_norm, geglu, no qkv bias): same names, same
    outputs for the same weights."""
    attention = pytest.importorskip("diffusers.models.attention")
    from glimpse3d_core.models.triposr.backbone import TransformerBlock
    from glimpse3d_core.models.triposr.config import BackboneConfig

    config = BackboneConfig(in_channels=32, num_attention_heads=2, attention_head_dim=16, num_layers=1,
                            cross_attention_dim=24, norm_num_groups=8)
    torch.manual_seed(0)
    reference = attention.BasicTransformerBlock(32, 2, 16, cross_attention_dim=24, activation_fn="geglu",
                                                attention_bias=False).eval()
    ours = TransformerBlock(config).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x, context = torch.randn(2, 10, 32), torch.randn(2, 7, 24)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, context), reference(x, encoder_hidden_states=context))


# ---- pre-processing ---------------------------------------------------------------------------------------------


def test_preprocess_centres_and_scales_the_foreground() -> None:
    h, w = 100, 60
    rgb = np.zeros((h, w, 3), np.float32)
    alpha = np.zeros((h, w), np.float32)
    alpha[10:90, 20:40] = 1.0  # 80 x 20 object, off-centre horizontally
    rgb[alpha > 0] = (1.0, 0.0, 0.0)
    out = preprocess(ObjectImage(rgb, alpha), 200).numpy()
    assert out.shape == (3, 200, 200)
    red = (out[0] > 0.75) & (out[1] < 0.25)
    rows, cols = np.flatnonzero(red.any(1)), np.flatnonzero(red.any(0))
    assert abs((rows[-1] - rows[0] + 1) / 200 - 0.85) < 0.02  # the long side fills foreground_ratio
    assert abs((rows[0] + rows[-1]) / 2 - 99.5) < 1.5 and abs((cols[0] + cols[-1]) / 2 - 99.5) < 1.5
    np.testing.assert_allclose(out[:, 0, 0], 0.5)  # grey background


def test_preprocess_rejects_bad_images() -> None:
    rgb = np.zeros((8, 8, 3), np.float32)
    with pytest.raises(EmptyForegroundError):
        preprocess(ObjectImage(rgb, np.zeros((8, 8), np.float32)), 32)
    rgb[0, 0, 0] = np.nan
    with pytest.raises(InvalidImageError):
        preprocess(ObjectImage(rgb, np.ones((8, 8), np.float32)), 32)


# ---- field, renderer, mesh, frames -------------------------------------------------------------------------------

SEMI_AXES = (0.6, 0.4, 0.5)  # ellipsoid semi-axes along TripoSR x, y, z, in units of the renderer radius
COLOR = (0.2, 0.4, 0.6)


def _ellipsoid_field() -> tuple[TriplaneField, NeRFDecoder, torch.Tensor]:
    """The tiny config's field whose density crosses 25 on the ellipsoid of SEMI_AXES (TripoSR x, y, z)."""
    config = TripoSRConfig.tiny()
    decoder, planes = ellipsoid_field(config, SEMI_AXES, COLOR)
    return TriplaneField(config.renderer, chunk_points=5000), decoder, planes


def test_mesh_of_a_known_field_has_the_right_axes_and_orientation() -> None:
    field, decoder, planes = _ellipsoid_field()
    mesh = extract_mesh(field, decoder, planes, resolution=64)
    extents = mesh.vertices.max(0) - mesh.vertices.min(0)
    expected = 2 * field.config.radius * np.array(SEMI_AXES)
    np.testing.assert_allclose(extents, expected, atol=0.06)
    np.testing.assert_allclose(mesh.vertices.mean(0), 0.0, atol=0.02)
    assert trimesh.Trimesh(mesh.vertices, mesh.faces, process=False).volume > 0  # faces point outwards
    np.testing.assert_allclose(mesh.colors, np.broadcast_to(COLOR, mesh.colors.shape), atol=1e-5)
    with pytest.raises(EmptySurfaceError, match="below"):
        extract_mesh(field, decoder, planes, resolution=32, threshold=1e9)


def test_world_frame_follows_the_input_camera() -> None:
    """A centred window: TripoSR's axes become the camera's back, right and up, its origin ours, its scale the
    lens and distance ratio; an off-centre window moves the origin onto that pixel's ray and tilts x along it."""
    field, decoder, planes = _ellipsoid_field()
    mesh = extract_mesh(field, decoder, planes, resolution=48)
    camera = _camera(0.0, 0.0)  # on +X: TripoSR's frame is ours, up to scale
    centred = (32.0, 32.0, 64.0)
    front = to_world(mesh, camera, centred)
    scale = np.ptp(front.vertices[:, 2]) / np.ptp(mesh.vertices[:, 2])
    np.testing.assert_allclose(front.vertices, mesh.vertices * scale, atol=1e-5)
    # A tiny depth extent: the magnification at the origin, camera distance 2 x f_T (per window) / (1.9 x focal 60).
    linear, offset = placement(camera, centred, 1e-9)
    f_triposr = 32.0 / np.tan(np.radians(TRIPOSR_FOVY_DEG / 2))
    np.testing.assert_allclose(linear, np.eye(3) * 2.0 * f_triposr / (TRIPOSR_CAMERA_DISTANCE * 60.0), atol=1e-9)
    np.testing.assert_allclose(offset, 0.0, atol=1e-12)
    side = to_world(mesh, _camera(90.0, 0.0), centred)  # camera on +Y: TripoSR x (towards the camera) becomes +Y
    np.testing.assert_allclose(side.vertices, mesh.vertices[:, [1, 0, 2]] * [-1, 1, 1] * scale, atol=1e-5)
    for azimuth, elevation in ((0.0, 30.0), (135.0, -20.0), (300.0, 60.0)):
        linear, _ = placement(_camera(azimuth, elevation), centred, 0.5)
        rotation = linear / np.linalg.norm(linear[:, 0])
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-9)
        assert np.linalg.det(rotation) == pytest.approx(1.0)
        np.testing.assert_allclose(rotation[:, 0], orbit_position(azimuth, elevation, 1.0), atol=1e-9)
    # Window centred 12 px right of and 6 px above the principal point: the origin sits on that pixel's ray.
    linear, offset = placement(camera, (44.0, 26.0, 64.0), 0.5)
    uv, _ = project_points(torch.as_tensor(offset[None]), torch.as_tensor(camera.viewmat)[None],
                           torch.as_tensor(camera.K)[None])
    np.testing.assert_allclose(uv[0, 0].numpy(), [44.0, 26.0], atol=1e-9)
    np.testing.assert_allclose(np.cross(linear[:, 0], offset - orbit_position(0.0, 0.0, 2.0)), 0.0, atol=1e-9)


def test_renderer_composites_over_white() -> None:
    field, decoder, planes = _ellipsoid_field()
    origins = torch.tensor([[2.0, 0.0, 0.0], [2.0, 0.0, 0.0], [2.0, 5.0, 0.0]])
    directions = torch.tensor([[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    out = field.render(decoder, planes, origins, directions)
    assert out.opacity[0] > 0.99  # through the ellipsoid's centre
    torch.testing.assert_close(out.rgb[0], torch.tensor(COLOR), atol=0.01, rtol=0)
    for miss in (1, 2):  # pointing away from, or passing beside, the cube
        assert out.opacity[miss] == 0.0
        torch.testing.assert_close(out.rgb[miss], torch.ones(3))


# ---- end to end ------------------------------------------------------------------------------------------------


def test_tiny_model_image_to_mesh_on_cpu() -> None:
    """Image -> coloured mesh in our world frame through the released code path. Random weights give a
    near-constant density, so the iso-level is taken inside the density's range instead of 25."""
    start = time.perf_counter()
    torch.manual_seed(0)
    model = TripoSR(TripoSRConfig.tiny()).eval()
    probe = TripoSRReconstructor(model, TripoSRReconstructConfig(mc_resolution=32))
    image = _object_image(64, 64)
    level = density_grid(probe.field, model.decoder, probe.scene_code(image), 32).median().item()
    backend = TripoSRReconstructor(model, TripoSRReconstructConfig(mc_resolution=32, density_threshold=level))
    depth = DepthMap(np.zeros(image.size, np.float32), np.zeros(image.size, bool))
    camera = _camera(0.0, 20.0)
    mesh = backend.reconstruct(image, depth, camera)
    assert len(mesh.faces) > 100 and np.isfinite(mesh.vertices).all()
    assert ((mesh.vertex_colors >= 0) & (mesh.vertex_colors <= 1)).all()
    # The foreground box rows 6-38, columns 10-28 (the last row and column left out, as upstream), 33 px high,
    # padded to int(33 / 0.85) = 38 px about its centre: the conditioning image shows that window of our image.
    window = framing(image.alpha, 0.85).window
    assert window == (20.0, 23.0, 38.0)
    expected = to_world(backend.mesh_in_model_frame(image), camera, window)
    np.testing.assert_allclose(mesh.vertices, expected.vertices, atol=1e-6)
    with pytest.raises(ValueError, match="differ in size"):
        backend.reconstruct(_object_image(), depth, camera)
    assert time.perf_counter() - start < 30.0
