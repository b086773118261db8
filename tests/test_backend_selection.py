"""Backend selection in the stage factories: ``auto`` falls back when weights are absent and takes the model
backend when they are present; a named model backend without weights fails before any work starts."""

from __future__ import annotations

import numpy as np
import pytest

from glimpse3d_core.backends.selection import check_backends_available, select_backend
from glimpse3d_core.config import PipelineConfig
from glimpse3d_core.models.errors import CorruptWeightsError, MissingWeightsError
from glimpse3d_core.models.registry import MODELS, get_spec
from glimpse3d_core.stages import depth, enhance, segment
from tests.test_backends import hf_snapshot, photo, save_tiny_dpt, tiny_spec


def test_auto_takes_weight_free_backends_when_weights_are_absent(empty_env):
    selections = check_backends_available(PipelineConfig())
    assert selections["segment"].backend == "matting" and "rembg-u2net" in selections["segment"].reason
    assert selections["depth"].backend == "inflation" and "dpt-hybrid-midas" in selections["depth"].reason
    assert not any(s.uses_model for s in selections.values())
    image = photo()
    assert depth.make_backend(depth.DepthConfig())(image).depth.shape == image.size  # inflation runs


def test_auto_takes_the_model_backend_when_weights_are_present(empty_env, monkeypatch):
    from glimpse3d_core.backends.dpt_depth import DptDepth

    real = get_spec("dpt-hybrid-midas")
    snap = hf_snapshot(empty_env, real.repo)
    save_tiny_dpt(snap)
    monkeypatch.setitem(MODELS, real.id, tiny_spec(real, snap))
    config = depth.DepthConfig()
    assert select_backend("depth", config).backend == "dpt"
    backend = depth.make_backend(config)
    assert isinstance(backend, DptDepth)
    result = depth.run(photo(), config)
    assert result.depth[result.valid].min() == pytest.approx(1.0)

    # The registry's real sizes do not fit the tiny files: a broken download is an error, even under auto.
    monkeypatch.setitem(MODELS, real.id, real)
    with pytest.raises(CorruptWeightsError):
        depth.make_backend(config)


def test_named_model_backends_without_weights_fail_in_the_factory(empty_env):
    with pytest.raises(MissingWeightsError, match="glimpse3d models download dpt-large"):
        depth.make_backend(depth.DepthConfig(backend="dpt", dpt={"model": "dpt-large"}))
    with pytest.raises(MissingWeightsError, match="glimpse3d models download rembg-u2net"):
        segment.make_backend(segment.SegmentConfig(backend="rembg"))
    with pytest.raises(MissingWeightsError, match="sdxl-base"):
        enhance.make_backend(enhance.EnhanceConfig(backend="sdxl-lightning"))


def test_check_names_every_missing_model_of_a_variant_before_work(empty_env, tmp_path):
    config = PipelineConfig().with_overrides({
        "depth": {"backend": "dpt"}, "enhance": {"backend": "sdxl-lightning"}})
    with pytest.raises(MissingWeightsError) as info:
        check_backends_available(config)
    assert ("glimpse3d models download dpt-hybrid-midas sdxl-base sdxl-lightning-4step sdxl-vae-fp16-fix "
            "controlnet-depth-sdxl") in str(info.value)
    named = PipelineConfig().with_overrides({"reconstruct": {"backend": "triposr"}})
    with pytest.raises(MissingWeightsError, match="glimpse3d models download triposr"):
        check_backends_available(named)
    from glimpse3d_core.pipeline import run_pipeline

    image = tmp_path / "in.png"
    from PIL import Image

    Image.fromarray((photo().composite() * 255).astype(np.uint8)).save(image)
    with pytest.raises(MissingWeightsError):
        run_pipeline(image, tmp_path / "out", config)
    assert not (tmp_path / "out").exists()  # nothing ran, nothing was written


def test_custom_onnx_path_needs_no_registry_model(empty_env, tmp_path):
    from tests.test_backends import export_tiny_u2net

    path = tmp_path / "seg.onnx"
    config = segment.SegmentConfig(backend="rembg", rembg={"onnx_path": str(path)})
    with pytest.raises(FileNotFoundError):
        segment.make_backend(config)
    export_tiny_u2net(path)
    rgb = np.zeros((40, 50, 3), dtype=np.float32)
    rgb[10:30, 15:35] = 1.0
    alpha = segment.make_backend(config)(rgb)
    assert alpha.shape == (40, 50) and alpha[20, 25] > 0.9 and alpha[2, 2] < 0.1
