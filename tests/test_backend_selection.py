"""Backend selection: ``auto`` falls back when weights are absent and takes the model backend when they are
present; a named model backend without weights fails before any work starts; one registry, one config shape."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import BaseModel

from glimpse3d_core.backends.base import REGISTRY, RunContext, build_stage_backend, get_backend, select
from glimpse3d_core.chain import SELECTED_STAGES, Chain
from glimpse3d_core.config import ConfigError, PipelineConfig, parse_assignments
from glimpse3d_core.models.errors import CorruptWeightsError, MissingWeightsError
from glimpse3d_core.models.registry import MODELS, get_spec
from glimpse3d_core.stages import depth, enhance, segment
from tests.test_backends import hf_snapshot, photo, save_tiny_dpt, tiny_spec


def test_auto_takes_weight_free_backends_when_weights_are_absent(empty_env):
    selections = Chain.prepare(PipelineConfig()).selections
    assert set(selections) == set(SELECTED_STAGES)
    assert selections["segment"].settings.name == "matting" and "rembg-u2net" in selections["segment"].reason
    assert selections["depth"].settings.name == "inflation" and "dpt-hybrid-midas" in selections["depth"].reason
    assert selections["enhance"].settings.name == "identity" and "sdxl-base" in selections["enhance"].reason
    assert all(s.backend.weight_free for s in selections.values())
    image = photo()
    assert depth.run(image).depth.shape == image.size  # inflation runs


def test_auto_takes_the_model_backend_when_weights_are_present(empty_env, monkeypatch):
    from glimpse3d_core.backends.dpt_depth import DptDepth

    real = get_spec("dpt-hybrid-midas")
    snap = hf_snapshot(empty_env, real.repo)
    save_tiny_dpt(snap)
    monkeypatch.setitem(MODELS, real.id, tiny_spec(real, snap))
    config = depth.DepthConfig()
    assert select("depth", config.backend, empty_env).settings.name == "dpt"
    assert isinstance(build_stage_backend("depth", config), DptDepth)
    result = depth.run(photo(), config)
    assert result.depth[result.valid].min() == pytest.approx(1.0)
    from glimpse3d_core.backends.dpt_depth import DPT, DptSettings

    report = DPT.verify(DptSettings(), RunContext.resolve("cpu", store=empty_env))
    assert any("tensors" in line for line in report) and report[-1] == "depth/dpt: built on cpu"

    # The registry's real sizes do not fit the tiny files: a broken download is an error, even under auto.
    monkeypatch.setitem(MODELS, real.id, real)
    with pytest.raises(CorruptWeightsError):
        build_stage_backend("depth", config)


def test_named_model_backends_without_weights_fail_when_selected(empty_env):
    with pytest.raises(MissingWeightsError, match="glimpse3d models download dpt-large"):
        build_stage_backend("depth", depth.DepthConfig(backend={"name": "dpt", "model": "dpt-large"}))
    with pytest.raises(MissingWeightsError, match="glimpse3d models download rembg-u2net"):
        build_stage_backend("segment", segment.SegmentConfig(backend="rembg"))
    with pytest.raises(MissingWeightsError, match="sdxl-base"):
        build_stage_backend("enhance", enhance.EnhanceConfig(backend="sdxl-lightning"))


def test_prepare_names_every_missing_model_of_a_variant_before_work(empty_env, tmp_path):
    config = PipelineConfig().with_overrides(parse_assignments(["depth.backend=dpt", "enhance.backend=sdxl-lightning"]))
    with pytest.raises(MissingWeightsError) as info:
        Chain.prepare(config)
    assert ("glimpse3d models download dpt-hybrid-midas sdxl-base sdxl-lightning-4step sdxl-vae-fp16-fix "
            "controlnet-depth-sdxl") in str(info.value)
    named = PipelineConfig().with_overrides({"reconstruct": {"backend": "triposr"}})
    with pytest.raises(MissingWeightsError, match="glimpse3d models download triposr"):
        Chain.prepare(named)
    from PIL import Image

    from glimpse3d_core.pipeline import run_pipeline

    image = tmp_path / "in.png"
    Image.fromarray((photo().composite() * 255).astype(np.uint8)).save(image)
    with pytest.raises(MissingWeightsError):
        run_pipeline(image, tmp_path / "out", config)
    assert not (tmp_path / "out").exists()  # nothing ran, nothing was written


def test_custom_onnx_path_needs_no_registry_model(empty_env, tmp_path):
    from tests.test_backends import export_tiny_u2net

    path = tmp_path / "seg.onnx"
    config = segment.SegmentConfig(backend={"name": "rembg", "onnx_path": str(path)})
    assert select("segment", config.backend, empty_env).models == ()
    with pytest.raises(FileNotFoundError):
        build_stage_backend("segment", config)
    export_tiny_u2net(path)
    rgb = np.zeros((40, 50, 3), dtype=np.float32)
    rgb[10:30, 15:35] = 1.0
    alpha = build_stage_backend("segment", config)(rgb)
    assert alpha.shape == (40, 50) and alpha[20, 25] > 0.9 and alpha[2, 2] < 0.1


def test_one_registry_one_shape():
    """Every stage with a backend: a weight-free fallback, settings that forbid unknown fields and are
    discriminated by the backend's name, and the stage config's ``backend`` union built from the registry."""
    for stage in SELECTED_STAGES:
        backends = REGISTRY[stage]
        default = getattr(PipelineConfig(), stage).backend
        assert default.name == "auto" and get_backend(stage, default.fallback.name).weight_free, stage
        assert not get_backend(stage, default.model.name).weight_free, stage
        for name, backend in backends.items():
            settings = backend.settings()
            assert settings.name == name and backend.stage == stage
            assert backend.settings.model_config["extra"] == "forbid"
            parsed = getattr(PipelineConfig().with_overrides({stage: {"backend": name}}), stage).backend
            assert type(parsed) is backend.settings


def _models(model: type[BaseModel], path: str = "") -> list[tuple[str, type[BaseModel]]]:
    found = [(path, model)]
    for name, info in model.model_fields.items():
        for arg in [info.annotation, *getattr(info.annotation, "__args__", ())]:
            for member in [arg, *getattr(arg, "__args__", ())]:
                if isinstance(member, type) and issubclass(member, BaseModel):
                    found += _models(member, f"{path}.{name}")
    return found


def test_every_level_is_frozen_and_forbids_unknown_fields():
    levels = _models(PipelineConfig)
    assert len(levels) > 15
    for path, model in levels:
        assert model.model_config.get("extra") == "forbid", f"{path or 'PipelineConfig'}: {model.__name__}"
        assert model.model_config.get("frozen"), f"{path}: {model.__name__}"


@pytest.mark.parametrize("item, named", [
    ("segment.canvas_sise=64", "'segment.canvas_sise'; valid names: alpha_threshold, backend, canvas_size"),
    ("segment.rembg.model=X", "'segment.rembg'; valid names"),
    ("depth.backend.fallback.smoothin=2", "smoothin'; valid names: alpha_threshold, name, smoothing_px"),
])
def test_unknown_fields_are_errors_naming_the_valid_ones(item, named):
    with pytest.raises(ConfigError, match="unknown field") as info:
        PipelineConfig().with_overrides(parse_assignments([item]))
    assert named in str(info.value)


def test_nested_assignments_and_backend_switches_keep_the_settings_auto_had():
    config = PipelineConfig.from_preset("smoke")
    assert config.reconstruct.backend.fallback.resolution == 24
    switched = config.with_overrides(parse_assignments([
        "reconstruct.backend=carving", "depth.backend.name=dpt", "depth.backend.model=dpt-large",
        "segment.backend.model.onnx_path=/x.onnx", "optimize.iterations=7"]))
    assert switched.reconstruct.backend.name == "carving" and switched.reconstruct.backend.resolution == 24
    assert switched.depth.backend.name == "dpt" and switched.depth.backend.model == "dpt-large"
    assert switched.segment.backend.model.onnx_path == "/x.onnx" and switched.optimize.iterations == 7
    assert switched.flat_params()["depth.backend.model"] == "dpt-large"
    with pytest.raises(ConfigError, match=r"expected FIELD\.PATH=VALUE"):
        parse_assignments(["optimize.iterations"])
    with pytest.raises(ConfigError, match="'auto', 'dpt', 'inflation'"):
        config.with_overrides(parse_assignments(["depth.backend=midas"]))


def test_run_context_is_resolved_once_from_the_config():
    context = PipelineConfig(device="cpu", seed=3).context()
    assert context == RunContext.resolve("cpu", 3, context.store)
    assert str(context.device) == "cpu" and context.dtype.is_floating_point
    if not __import__("torch").cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            PipelineConfig(device="cuda").context()


def test_a_new_backend_is_one_file_and_one_registration(tmp_path):
    """The worked example of docs/backends.md, as written there: its module, imported before the stage module
    (the registration), is selectable by name from a --set assignment and runs through the chain."""
    import re
    import subprocess
    import sys

    from tests.conftest import REPO

    doc = (REPO / "docs" / "backends.md").read_text()
    code = re.search(r"```python\n(.*?)```", doc, re.S).group(1)
    (tmp_path / "threshold_segment.py").write_text("\n".join(line.removeprefix("   ") for line in code.splitlines()))
    script = (
        "import numpy as np, threshold_segment\n"
        "from glimpse3d_core.chain import Chain\n"
        "from glimpse3d_core.config import PipelineConfig, parse_assignments\n"
        "c = PipelineConfig(device='cpu').with_overrides(parse_assignments(['segment.backend=threshold', "
        "'segment.backend.level=0.5']))\n"
        "rgb = np.ones((8, 8, 3), np.float32); rgb[2:6, 2:6] = 0.2\n"
        "print(c.segment.backend.name, Chain.prepare(c).backend('segment')(rgb).sum())\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "PYTHONPATH": f"{tmp_path}:{REPO}"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["threshold", "16.0"]
