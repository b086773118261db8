"""CLI commands inspect, render, eval nvs and eval render-gt, run through typer on the real data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from glimpse3d_cli.main import app
from glimpse3d_core.groundtruth import read_protocol_views
from glimpse3d_core.io.ply import write_ply
from glimpse3d_core.metrics import silhouette_iou
from glimpse3d_core.types import Gaussians, rgb_to_sh0

CHICKEN = "syncdreamer_eval/syncdreamer_gso_chicken"
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_inspect_real_splats(shared_data):
    donut = invoke("inspect", shared_data / "splats/gshairlod_donut_mipsplatting/fused.ply")
    assert donut.exit_code == 0 and "45,624 Gaussians, SH degree 0" in donut.output
    fruit = invoke("inspect", "--json", shared_data / "splats/supersplat_fruit_drops/fruit_drops_minimal.ply")
    info = json.loads(fruit.output)
    assert info["num_gaussians"] == 4721 and info["sh_degree"] == 3 and info["extra_properties"] == ["transform"]
    assert len(info["bounds_min"]) == 3


def test_inspect_rejects_compressed_and_corrupt(shared_data, tmp_path):
    result = invoke("inspect", shared_data / "splats/playcanvas_compressed_test/test.compressed.ply")
    assert result.exit_code == 2 and "compressed PLY" in result.output
    (tmp_path / "bad.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 9\n")
    result = invoke("inspect", tmp_path / "bad.ply")
    assert result.exit_code == 2 and "corrupt or truncated" in result.output


def test_eval_nvs_chicken(shared_data):
    args = ("eval", "nvs", "--pred", shared_data / CHICKEN / "chicken-pr", "--gt", shared_data / CHICKEN / "chicken-gt")
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    scores = json.loads(lines[0])
    assert scores["psnr"] == pytest.approx(25.41, abs=0.05)
    assert scores["input_psnr"] > scores["novel_psnr"] and 0 < scores["ssim"] < 1
    assert "lpips" in scores and "novel_lpips" in scores
    text = invoke(*args)
    assert text.exit_code == 0 and f"psnr: {scores['psnr']:.4f}" in text.output.splitlines()


def test_eval_nvs_errors(shared_data, tmp_path):
    result = invoke("eval", "nvs", "--pred", tmp_path, "--gt", shared_data / CHICKEN / "chicken-gt")
    assert result.exit_code == 2 and "missing 000.png" in result.output


def test_render_gt_reproduces_chicken(shared_data, tmp_path):
    result = invoke("eval", "render-gt", shared_data / CHICKEN / "chicken-mesh/meshes/model.obj",
                    "--out", tmp_path, "--up", "z", "--rotate-z", "90", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["views"] == 16
    ours, reference = read_protocol_views(tmp_path), read_protocol_views(shared_data / CHICKEN / "chicken-gt")
    assert silhouette_iou(ours.alpha, reference.alpha) >= 0.99
    both = (ours.depth > 0) & (reference.depth > 0)
    assert np.abs(ours.depth - reference.depth)[both].mean() <= 0.005
    assert invoke("eval", "render-gt", tmp_path / "missing.obj", "--out", tmp_path).exit_code == 2


def small_splat(n: int = 400) -> Gaussians:
    g = torch.Generator().manual_seed(0)
    return Gaussians(
        means=(torch.rand(n, 3, generator=g) - 0.5) * 0.5,
        quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
        log_scales=torch.full((n, 3), -3.0),
        opacity_logits=torch.full((n,), 3.0),
        sh0=rgb_to_sh0(torch.tensor([0.9, 0.2, 0.1])).expand(n, 1, 3).clone(),
    )


def test_render_splat_views(tmp_path):
    ply = write_ply(tmp_path / "s.ply", small_splat())
    result = invoke("render", ply, "--out", tmp_path / "views", "--size", "32")
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "views").iterdir())
    assert names == [f"{i:03d}.png" for i in range(16)]
    image = np.asarray(Image.open(tmp_path / "views" / "000.png"))
    assert image.shape == (32, 32, 4) and image[16, 16, 3] > 200 and image[0, 0, 3] == 0
    assert image[16, 16, 0] > image[16, 16, 2]  # orange-red splat
    turntable = invoke("render", ply, "--out", tmp_path / "tt", "--rig", "turntable", "--frames", "3", "--size", "16")
    assert turntable.exit_code == 0 and len(list((tmp_path / "tt").iterdir())) == 3


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without CUDA")
def test_render_cuda_without_gpu(tmp_path):
    ply = write_ply(tmp_path / "s.ply", small_splat(10))
    result = invoke("render", ply, "--out", tmp_path / "v", "--device", "cuda")
    assert result.exit_code == 2 and "no CUDA GPU" in result.output


def test_config_prints_the_resolved_yaml_and_refuses_unknown_fields(tmp_path):
    import yaml

    from glimpse3d_core.config import PipelineConfig

    result = invoke("config", "--preset", "smoke", "--set", "depth.backend=dpt", "--set", "optimize.iterations=9")
    assert result.exit_code == 0, result.output
    data = yaml.safe_load(result.output)
    assert data["depth"]["backend"] == {"name": "dpt", "model": "dpt-hybrid-midas"}
    assert data["optimize"]["iterations"] == 9 and data["preset"] == "smoke"
    assert PipelineConfig.model_validate(data).optimize.iterations == 9  # the YAML reads back as it is
    bad_field = ["--set", "segment.canvas_sise=64"]
    run = ["run", str(tmp_path / "none.png"), "--out", str(tmp_path / "out")]
    for args in (["config", *bad_field], [*run, *bad_field]):
        bad = invoke(*args)
        assert bad.exit_code == 2
        assert "unknown field 'segment.canvas_sise'; valid names: alpha_threshold, backend, canvas_size" in bad.output
    assert not (tmp_path / "out").exists()
