"""Acceptance of the Dagster asset graph through ``glimpse3d run``/``rerun`` on real photos (CPU, tiny sizes).

One materialisation of 3 real images + 1 corrupt file is shared by the tests of this module (module fixture);
the tests run in file order: the rerun test needs the untouched first materialisation, the MLflow test adds a
second variant for the rerun image afterwards.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import trimesh
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance
from typer.testing import CliRunner

from glimpse3d_cli.main import app
from glimpse3d_core.io.ply import read_ply
from glimpse3d_core.viewer.page import viewer_bundle_built

REPO = Path(__file__).resolve().parents[1]
PHOTOS = ["dreamgaussian/ghost_rgba.png", "threestudio/cactus_rgba.png", "triposr/chair.png"]
KEYS = ["cactus_rgba", "chair", "ghost_rgba"]
TINY = [
    "segment.canvas_size=64", "reconstruct.backend.fallback.resolution=24", "gaussians.num_gaussians=800",
    "multiview.image_size=32", "optimize.iterations=2", "optimize.image_size=32", "optimize.views_per_step=2",
    "export.mesh_resolution=16", "export.mesh_view_size=32", "export.mesh_views_per_ring=3",
    "export.turntable_frames=4", "export.turntable_size=32", "export.preview_frames=2", "export.texture_size=128",
]
"""Run-level overrides that make every stage tiny (they apply to every variant)."""
DELIVERABLES = sorted(["mesh.glb", "mesh_vertexcolor.glb", "mesh.obj", "metrics.json", "model.ply", "preview.png",
                       "turntable.mp4"]
                      + (["viewer.html"] if viewer_bundle_built() else []))


def glimpse3d(*args: str):
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def tiny_args() -> list[str]:
    return [x for item in TINY for x in ("--set", item)] + ["--device", "cpu"]


@pytest.fixture(scope="module")
def materialised(tmp_path_factory, shared_data):
    inbox = tmp_path_factory.mktemp("inbox")
    for rel in PHOTOS:
        shutil.copy(shared_data / "inputs" / rel, inbox)
    (inbox / "broken.png").write_bytes((shared_data / "inputs" / PHOTOS[2]).read_bytes()[:2000])
    out = tmp_path_factory.mktemp("out")
    result = glimpse3d("run", inbox, "--out", out, *tiny_args())
    return out, result


def storage_files(out: Path) -> dict[str, bytes]:
    root = out / ".glimpse3d" / "storage"
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def materialisation_count(out: Path, asset: str, partition: str) -> int:
    instance = DagsterInstance.from_config(str(out / ".glimpse3d" / "dagster"))
    return len(instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[partition]), limit=100).records)


def test_folder_materialises_and_a_corrupt_file_fails_alone(materialised):
    out, result = materialised
    assert result.exit_code == 1, result.output
    assert "FAILED broken.png" in result.output and "corrupt or truncated" in result.output
    assert "3 of 4 image(s) done, 1 failed" in result.output
    for key in KEYS:
        assert sorted(p.name for p in (out / key).iterdir()) == DELIVERABLES
        gaussians = read_ply(out / key / "model.ply")
        assert len(gaussians) > 0 and gaussians.is_finite()
        mesh = trimesh.load(out / key / "mesh.glb", force="mesh")
        assert len(mesh.faces) > 0
        metrics = json.loads((out / key / "metrics.json").read_text())
        assert metrics["image"] == key and metrics["variant"] == "default" and metrics["input_psnr"] > 0
        assert set(metrics["timings"]) >= {"segment", "optimize", "refine"}
    assert [p.name for p in (out / "broken").iterdir()] == ["error.json"]  # the gallery shows it; nothing else
    assert "corrupt or truncated" in json.loads((out / "broken" / "error.json").read_text())["error"]
    stored = storage_files(out)
    assert "exports/ghost_rgba/default/manifest.json" in stored and "source_image/broken/manifest.json" not in stored


def test_rerun_one_stage_touches_only_that_partition_and_downstream(materialised):
    out, _ = materialised
    before = storage_files(out)
    result = glimpse3d("rerun", "refined_gaussians", "--images", "chair", "--out", out)
    assert result.exit_code == 0, result.output
    after = storage_files(out)
    assert after.keys() == before.keys()
    rerun_assets = ("refined_gaussians", "exports", "quality_metrics")
    for path, data in before.items():
        asset, image = path.split("/")[:2]
        if image == "chair" and asset in rerun_assets:
            continue
        assert after[path] == data, f"{path} changed"
    pair = "chair|default"
    for asset in rerun_assets:
        assert materialisation_count(out, asset, pair) == 2
        assert materialisation_count(out, asset, "ghost_rgba|default") == 1
    for asset in ("optimized_gaussians",):
        assert materialisation_count(out, asset, pair) == 1
    assert materialisation_count(out, "foreground", "chair") == 1


def test_two_variants_give_two_mlflow_runs_and_compare_prints_them(materialised, tmp_path):
    out, _ = materialised
    result = glimpse3d("run", _photo(out), "--out", out, "--variant", "no_refine", *tiny_args())
    assert result.exit_code == 0, result.output
    uri = f"sqlite:///{out / '.glimpse3d' / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("glimpse3d").experiment_id
    runs = client.search_runs([experiment], filter_string="tags.image = 'chair'")
    by_variant = {r.data.tags["variant"]: r for r in runs}
    assert {"default", "no_refine"} <= by_variant.keys()
    default, no_refine = by_variant["default"], by_variant["no_refine"]
    assert default.data.params["refine.depth_consistency"] == "True"
    assert no_refine.data.params["refine.depth_consistency"] == "False"
    assert "code.git_sha" in default.data.params and default.data.tags["dagster_run_id"]
    for run in (default, no_refine):
        assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"preview.png", "turntable.mp4",
                                                                          "metrics.json"}
        assert run.data.metrics["input_psnr"] > 0 and "timings.optimize" in run.data.metrics
    table = tmp_path / "ablations.md"
    printed = subprocess.run([sys.executable, str(REPO / "research" / "compare.py"), "--tracking-uri", uri,
                              "--out", str(table)], capture_output=True, text=True, check=True).stdout
    assert "no_refine" in printed and "default" in printed and "input_psnr" in printed
    assert "| variant" in table.read_text()


def _photo(out: Path) -> Path:
    """The photo `chair` came from (as recorded by the first run)."""
    keys = json.loads((out / ".glimpse3d" / "images.json").read_text())
    return Path(next(path for path, key in keys.items() if key == "chair"))


def test_definitions_validate():
    result = subprocess.run(["dagster", "definitions", "validate", "-w", "workspace.yaml"], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All code locations passed validation" in result.stdout + result.stderr
