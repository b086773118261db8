"""``glimpse3d bench`` end to end on real ground truth (the protocol's chicken), smoke-sized: the real asset graph on
a real Dagster instance, scores in the real MLflow store, JSON lines on stdout, the report, compare.py's ranking."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch
from typer.testing import CliRunner

from glimpse3d_cli.main import app

REPO = Path(__file__).resolve().parents[1]
CHICKEN_GT = "syncdreamer_eval/syncdreamer_gso_chicken/chicken-gt"


def glimpse3d(*args: str):
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


@pytest.mark.slow
def test_bench_scores_variants_into_their_mlflow_runs(shared_data, tmp_path):
    root = tmp_path / "gt"
    root.mkdir()
    (root / "chicken").symlink_to(shared_data / CHICKEN_GT, target_is_directory=True)
    out, report = tmp_path / "bench", tmp_path / "results" / "bench.md"
    result = glimpse3d("bench", root, "--out", out, "--preset", "smoke", "--device", "cpu",
                       "--variants", "default", "--variants", "no_refine", "--report", report)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [(r["object"], r["variant"]) for r in lines] == [("chicken", "default"), ("chicken", "no_refine")]
    for row in lines:
        scores = row["scores"]
        for key in ("input_psnr", "novel_psnr", "input_ssim", "novel_ssim", "input_iou", "novel_iou", "chamfer",
                    "fscore"):
            assert math.isfinite(scores[key]), key
        assert 5 < scores["novel_psnr"] < 40 and 0 < scores["novel_iou"] <= 1
        assert scores["input_iou"] > 0.8  # the export, read back in its file frame, lies where the photo shows it
    default, no_refine = (r["refine"] for r in lines)
    assert default["accepted"] in (0, 1) and "depth_consistency_r2" in default and "input_psnr_after" in default
    assert no_refine["colors_fused"] == 0 and "input_psnr_after" not in no_refine  # nothing ran, nothing gated

    uri = f"sqlite:///{out / '.glimpse3d' / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    for row in lines:  # the scores sit in the run quality_metrics opened for that (image, variant)
        run = client.get_run(row["mlflow_run_id"])
        assert run.data.tags["image"] == "chicken" and run.data.tags["variant"] == row["variant"]
        assert run.data.metrics["gt.novel_psnr"] == pytest.approx(row["scores"]["novel_psnr"])
        assert "input_psnr" in run.data.metrics and "refine.accepted" in run.data.metrics
    assert "| default | 1 |" in report.read_text() and json.loads(report.with_suffix(".json").read_text()) == lines
    assert json.loads((out / "bench.json").read_text())["rows"] == lines

    table = subprocess.run([sys.executable, str(REPO / "research" / "compare.py"), "--tracking-uri", uri],
                           capture_output=True, text=True, check=True).stdout
    ranked = [line.split("|")[1].strip() for line in table.splitlines()[2:]]
    best = max(lines, key=lambda r: r["scores"]["novel_psnr"])["variant"]
    assert ranked[0] == best and "gt.novel_psnr" in table


@pytest.mark.parametrize("up", ["-y", "y", "z"])
def test_exported_gaussians_are_read_back_in_the_world_frame(tmp_path, up):
    """bench scores model.ply in our +Z-up world whatever ``export.up`` the file was written with."""
    from glimpse3d_core.io.ply import write_ply
    from glimpse3d_core.orientation import read_exported, to_file_frame
    from glimpse3d_core.types import Gaussians, rgb_to_sh0

    n = 5
    world = Gaussians(means=torch.tensor([[0.1, 0.2, 0.3]] * n) * torch.arange(1, n + 1)[:, None],
                      quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]] * n), log_scales=torch.full((n, 3), -3.0),
                      opacity_logits=torch.zeros(n), sh0=rgb_to_sh0(torch.full((n, 3), 0.5))[:, None, :],
                      shN=torch.zeros(n, 0, 3))
    write_ply(tmp_path / "model.ply", to_file_frame(world, up))
    (tmp_path / "metrics.json").write_text(json.dumps({"splat_up": up}))
    assert torch.allclose(read_exported(tmp_path / "model.ply").means, world.means, atol=1e-6)


def test_bench_refuses_a_folder_without_protocol_views(tmp_path):
    (tmp_path / "obj").mkdir()
    (tmp_path / "obj" / "000.png").write_bytes(b"")
    result = glimpse3d("bench", tmp_path, "--out", tmp_path / "out")
    assert result.exit_code == 2 and "no folder holds the protocol views" in result.output


def test_preset_auto_picks_quality_on_cuda_and_fast_on_cpu():
    import torch

    from glimpse3d_cli.run import resolve_preset

    assert resolve_preset("auto", "cpu") == "fast" and resolve_preset("auto", "cuda") == "quality"
    assert resolve_preset("auto", "auto") == ("quality" if torch.cuda.is_available() else "fast")
    assert resolve_preset("smoke", "cuda") == "smoke"
