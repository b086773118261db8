"""The learned backends wired into the stages: tiny TripoSR / SyncDreamer / CLIP checkpoints saved where the model
store looks (GLIMPSE3D_MODELS_DIR, the registry's file names), picked by ``auto`` through the stages' own ``run``;
absent weights give the weight-free backends with the choice recorded; a named backend without weights fails
before any work, in the Dagster graph too."""

from __future__ import annotations

import numpy as np
import pytest
from dagster import AssetKey, DagsterInstance
from PIL import Image

from glimpse3d_core.backends.base import RunContext, build_stage_backend, select
from glimpse3d_core.backends.syncdreamer_multiview import input_elevation_deg
from glimpse3d_core.backends.triposr_reconstruct import build as triposr_reconstructor
from glimpse3d_core.cameras import syncdreamer16_rig
from glimpse3d_core.chain import Chain
from glimpse3d_core.config import PipelineConfig
from glimpse3d_core.imaging import resize
from glimpse3d_core.input_camera import CANONICAL, SYNCDREAMER16_VIEW0
from glimpse3d_core.models.errors import MissingWeightsError
from glimpse3d_core.models.syncdreamer import SyncDreamerMultiview
from glimpse3d_core.models.triposr import TripoSRReconstructConfig
from glimpse3d_core.models.triposr.mesh import density_grid
from glimpse3d_core.stages import export, multiview, reconstruct
from glimpse3d_core.types import DepthMap, MeshAsset, ObjectImage
from tests.test_backends import save_tiny_clip
from tests.test_stage_multiview import blob
from tests.tiny_models import TINY_SYNCDREAMER, install, save_tiny_syncdreamer, save_tiny_triposr, store

__all__ = ["store"]  # the model-store fixture

CANVAS = 64
VIEW_PX = 32


def object_photo(size: int = CANVAS) -> ObjectImage:
    yy, xx = np.mgrid[0:size, 0:size]
    alpha = ((((yy - size / 2) / 0.4) ** 2 + ((xx - size / 2) / 0.3) ** 2) < (size / 2.5) ** 2).astype(np.float32)
    rgb = np.stack([xx / size, yy / size, np.full_like(xx, 0.4, dtype=float)], -1).astype(np.float32)
    return ObjectImage(rgb * alpha[..., None], alpha, "blob")




def test_absent_weights_give_weight_free_backends_with_the_choice_recorded(store):
    selections = Chain.prepare(PipelineConfig()).selections
    assert selections["reconstruct"].settings.name == "carving" and "triposr" in selections["reconstruct"].reason
    multiview_choice = selections["multiview"]
    assert multiview_choice.settings.name == "initial_renders" and "syncdreamer" in multiview_choice.reason
    views = multiview.run(blob(), object_photo(), CANONICAL.camera(CANVAS), multiview.MultiviewConfig(
        image_size=VIEW_PX))
    assert views.depth is not None and len(views) == 17  # the render backend ran
    with pytest.raises(MissingWeightsError, match="glimpse3d models download syncdreamer"):
        build_stage_backend("multiview", multiview.MultiviewConfig(backend="syncdreamer"))
    with pytest.raises(MissingWeightsError, match="glimpse3d models download triposr"):
        build_stage_backend("reconstruct", reconstruct.ReconstructConfig(backend="triposr"))


def test_auto_reconstructs_with_tiny_triposr_weights(store, monkeypatch):
    save_tiny_triposr(store, monkeypatch)
    assert select("reconstruct", reconstruct.ReconstructConfig().backend, store).settings.name == "triposr"
    image = object_photo()
    cpu = RunContext.resolve("cpu", store=store)
    probe = triposr_reconstructor(TripoSRReconstructConfig(mc_resolution=24), cpu)
    # Random weights give a near-constant density: take the iso-level inside its range instead of 25.
    level = density_grid(probe.field, probe.model.decoder, probe.scene_code(image), 24).median().item()
    config = reconstruct.ReconstructConfig(backend={"name": "auto", "model": {
        "name": "triposr", "mc_resolution": 24, "density_threshold": level}})
    depth = DepthMap(np.where(image.alpha > 0, 1.0, 0.0).astype(np.float32), image.alpha > 0)
    mesh = reconstruct.run(image, depth, CANONICAL.camera(CANVAS), config)
    assert isinstance(mesh, MeshAsset) and len(mesh.faces) > 0
    assert mesh.vertices.shape == (len(mesh.vertices), 3) and mesh.vertex_colors.shape == mesh.vertices.shape
    assert mesh.faces.shape[1] == 3 and mesh.faces.max() < len(mesh.vertices)
    assert mesh.vertex_colors.min() >= 0 and mesh.vertex_colors.max() <= 1
    backend = triposr_reconstructor(config.backend.model, cpu)
    assert backend.model is probe.model  # loaded once per process
    direct = backend.reconstruct(image, depth, CANONICAL.camera(CANVAS))  # placed for the stage's camera
    np.testing.assert_allclose(mesh.vertices, direct.vertices, atol=1e-6)


def test_auto_generates_views_with_tiny_syncdreamer_weights(store, monkeypatch):
    save_tiny_syncdreamer(store, monkeypatch)
    config = multiview.MultiviewConfig(image_size=VIEW_PX, backend={"name": "auto", "model": TINY_SYNCDREAMER})
    assert select("multiview", config.backend, store).settings == TINY_SYNCDREAMER
    backend = build_stage_backend("multiview", config)
    assert isinstance(backend, multiview.SyncDreamerBackend)
    assert build_stage_backend("multiview", config).model.model is backend.model.model  # loaded once per process
    photo, gaussians = object_photo(), blob()

    # Canonical input camera (elevation 20, not a rig camera): the photo first, then the 16 generated views.
    views = multiview.run(gaussians, photo, CANONICAL.camera(CANVAS), config)
    assert len(views) == 17 and views.rgb.shape == (17, VIEW_PX, VIEW_PX, 3) and views.depth is not None
    direct = SyncDreamerMultiview(backend.model.model, TINY_SYNCDREAMER.backend_config())(photo, 20.0)
    expected = np.stack([resize(v, VIEW_PX) for v in direct.rgb])
    np.testing.assert_allclose(views.rgb[1:], expected, atol=1e-5)  # elevation 20 read from the camera
    np.testing.assert_allclose(views.rig.viewmats[1:], syncdreamer16_rig(VIEW_PX).viewmats)
    rendered = multiview.run(gaussians, photo, CANONICAL.camera(CANVAS), multiview.MultiviewConfig(
        image_size=VIEW_PX, backend="initial_renders"))
    assert np.abs(views.rgb[1:] - rendered.rgb[1:]).max() > 0.1
    np.testing.assert_allclose(views.depth, rendered.depth)  # the coarse geometry's depth is kept

    # SyncDreamer's own input camera: the photo replaces generated view 0, views 1..15 follow.
    known = multiview.run(gaussians, photo, SYNCDREAMER16_VIEW0.camera(CANVAS), config)
    assert len(known) == 16 and input_elevation_deg(SYNCDREAMER16_VIEW0.camera(CANVAS)) == pytest.approx(30.0)


def test_clip_similarity_only_with_clip_weights(store, monkeypatch):
    gaussians = blob()
    views = multiview.run(gaussians, object_photo(), CANONICAL.camera(CANVAS), multiview.MultiviewConfig(
        image_size=VIEW_PX))
    assert "clip_similarity" not in export.quality_metrics(gaussians, views)  # absent, never made up
    save_tiny_clip(store.models_dir / "clip-vit-base-patch32")
    install(store, monkeypatch, "clip-vit-base-patch32")
    value = export.quality_metrics(gaussians, views)["clip_similarity"]
    assert -1.0 <= value <= 1.0 and np.isfinite(value)


# ---- Dagster: fail before any work -----------------------------------------------------------------------------


def _graph(tmp_path, overrides: dict):
    from glimpse3d_assets.definitions import build_definitions, build_resources
    from glimpse3d_assets.resources import PipelineSettings

    tiny = {"segment": {"canvas_size": CANVAS}, "reconstruct": {"backend": {"fallback": {"resolution": 24}}},
            "gaussians": {"num_gaussians": 400}}
    settings = PipelineSettings(device="cpu", overrides={**tiny, **overrides})
    resources = build_resources(str(tmp_path / "storage"), inbox=str(tmp_path),
                                mlflow_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", settings=settings)
    photo = tmp_path / "blob.png"
    image = object_photo()
    Image.fromarray((np.dstack([image.rgb, image.alpha]) * 255).astype(np.uint8)).save(photo)
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("images", ["blob"])
    return build_definitions(resources), instance, {"ops": {"source_image": {"config": {"uri": str(photo)}}}}


def _failure(result) -> str:
    return next(e.event_specific_data.error.message for e in result.all_events if e.is_step_failure)


def test_graph_fails_before_any_work_when_a_named_model_is_missing(store, tmp_path):
    from glimpse3d_assets.jobs import IMAGE_JOB, VARIANT_JOB
    from glimpse3d_assets.partitions import image_variant_key

    defs, instance, run_config = _graph(tmp_path, {"reconstruct": {"backend": "triposr"}})
    result = defs.resolve_job_def(IMAGE_JOB).execute_in_process(
        run_config=run_config, partition_key="blob", instance=instance, raise_on_error=False)
    assert not result.success
    assert "glimpse3d models download triposr" in _failure(result)
    assert not (tmp_path / "storage").exists()  # not even the photo was stored
    assert [e.step_key for e in result.all_events if e.is_step_success] == []

    # The syncdreamer variant: the shared image stages run (weight-free), the variant fails at its first step.
    defs, instance, run_config = _graph(tmp_path, {})
    image = defs.resolve_job_def(IMAGE_JOB).execute_in_process(
        run_config=run_config, partition_key="blob", instance=instance, raise_on_error=False)
    assert image.success
    recorded = instance.get_latest_materialization_event(AssetKey("source_image")).asset_materialization.metadata
    assert recorded["backends"].value["reconstruct"] == "carving"  # auto, no weights: the choice is recorded
    result = defs.resolve_job_def(VARIANT_JOB).execute_in_process(
        partition_key=image_variant_key("blob", "syncdreamer"), instance=instance, raise_on_error=False)
    assert not result.success and "glimpse3d models download syncdreamer" in _failure(result)
    assert not (tmp_path / "storage" / "multiview").exists()


def test_cli_run_refuses_a_variant_without_weights_before_any_work(store, tmp_path):
    from typer.testing import CliRunner

    from glimpse3d_cli.main import app

    photo = tmp_path / "blob.png"
    Image.fromarray((object_photo().composite() * 255).astype(np.uint8)).save(photo)
    result = CliRunner().invoke(app, ["run", str(photo), "--out", str(tmp_path / "out"), "--variant", "syncdreamer"])
    assert result.exit_code == 2 and "glimpse3d models download syncdreamer" in result.output
    assert not (tmp_path / "out").exists()
