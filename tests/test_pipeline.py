"""The in-process pipeline and its configuration: one real photo end to end, bad inputs, presets, overrides."""

from __future__ import annotations

import json

import pytest

from glimpse3d_core.config import ConfigError, PipelineConfig
from glimpse3d_core.io.ply import read_ply
from glimpse3d_core.pipeline import STAGES, PipelineError, run_pipeline

TINY = {
    "segment": {"canvas_size": 128},
    "reconstruct": {"backend": {"fallback": {"resolution": 48}}},
    "gaussians": {"num_gaussians": 1500},
    "multiview": {"image_size": 64},
    "optimize": {"iterations": 15, "image_size": 64, "views_per_step": 2},
    "export": {"mesh_resolution": 32, "mesh_view_size": 48, "mesh_views_per_ring": 4, "turntable_frames": 4,
               "turntable_size": 64, "preview_frames": 4},
}


def test_real_photo_end_to_end(shared_data, tmp_path):
    photo = shared_data / "inputs" / "triposr" / "chair.png"
    config = PipelineConfig.from_dict({"preset": "fast", "device": "cpu", **TINY})
    events = []
    result = run_pipeline(photo, tmp_path, config, progress=lambda s, e, t: events.append((s, e)))
    assert [s for s, e in events if e == "end"] == list(STAGES)
    out = tmp_path / "chair"
    for name in ("model.ply", "mesh.glb", "mesh.obj", "turntable.mp4", "preview.png", "metrics.json"):
        assert (out / name).stat().st_size > 0, name
    assert len(read_ply(out / "model.ply")) == len(result.gaussians) > 500
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["input_psnr"] > 15 and metrics["silhouette_iou"] > 0.7
    assert set(metrics["timings"]) >= set(STAGES) - {"export"}
    assert result.optimize.losses[-1] < result.optimize.losses[0]


def test_bad_image_fails_alone_with_a_clear_error(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    with pytest.raises(PipelineError, match=r"broken.png: segment failed"):
        run_pipeline(bad, tmp_path / "out", PipelineConfig(device="cpu"))
    assert not (tmp_path / "out" / "broken").exists()


def test_presets_and_overrides():
    fast, quality = PipelineConfig.from_preset("fast"), PipelineConfig.from_preset("quality")
    assert fast == PipelineConfig()
    assert quality.optimize.densify and quality.optimize.iterations > fast.optimize.iterations
    tweaked = quality.with_overrides({"optimize": {"iterations": 7}, "input_camera": "syncdreamer16"})
    assert tweaked.optimize.iterations == 7 and tweaked.optimize.densify  # nested merge keeps the rest
    assert tweaked.input_camera.keep_framing and tweaked.input_camera.elevation_deg == 30
    assert PipelineConfig.from_dict({"preset": "quality"}) == quality
    with pytest.raises(ConfigError, match="bogus"):
        fast.with_overrides({"optimize": {"bogus": 1}})
    with pytest.raises(ConfigError, match="preset"):
        PipelineConfig.from_preset("ultra")


def test_flat_params_and_load(tmp_path):
    params = PipelineConfig().flat_params()
    assert params["optimize.iterations"] == str(PipelineConfig().optimize.iterations)
    assert params["preset"] == "fast" and all(isinstance(v, str) for v in params.values())
    path = tmp_path / "cfg.yaml"
    path.write_text("preset: fast\nrefine: {color_fusion: false}\nseed: 5\n")
    loaded = PipelineConfig.load(path)
    assert loaded.seed == 5 and not loaded.refine.color_fusion
    path.write_text("- not a mapping\n")
    with pytest.raises(ConfigError):
        PipelineConfig.load(path)
