"""The package installs: a wheel built from this checkout, installed non-editable into a fresh virtual
environment, runs ``glimpse3d run`` on a bundled photo from an unrelated folder (package data found through
importlib.resources, not through the checkout)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from glimpse3d_core.viewer.page import viewer_bundle_built
from tests.conftest import REPO

PACKAGES = ("glimpse3d_core", "glimpse3d_assets", "glimpse3d_cli")
PHOTO = REPO / "examples" / "images" / "teapot.png"
OUTPUTS = ("model.ply", "mesh.glb", "mesh.obj", "turntable.mp4", "preview.png", "metrics.json")


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


@pytest.mark.slow
def test_wheel_installs_and_runs_from_an_unrelated_folder(tmp_path):
    # Build from a copy of the sources, so the checkout gets no build/ or egg-info, as from a clean clone.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for package in PACKAGES:
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(wheels),
          str(source)], cwd=tmp_path, env=env)
    (wheel,) = wheels.glob("glimpse3d-*.whl")

    # The heavy dependencies come from this interpreter's site-packages; glimpse3d itself from the venv.
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=False, symlinks=True)
    bin_dir = env_dir / "bin"
    python = bin_dir / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "--quiet",
          str(wheel)], cwd=tmp_path, env=env)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**env, "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}", "GLIMPSE3D_MODELS_DIR": str(tmp_path / "models"),
           "HF_HUB_CACHE": str(tmp_path / "hf"), "REMBG_HOME": str(tmp_path / "rembg")}
    site = json.loads(_run([str(python), "-c", "import json, glimpse3d_assets, glimpse3d_cli, glimpse3d_core; "
                            "print(json.dumps([m.__file__ for m in (glimpse3d_assets, glimpse3d_cli, "
                            "glimpse3d_core)]))"], cwd=elsewhere, env=env).strip())
    for module_file in site:  # the installed copy is the one imported, not the checkout or an editable install
        assert Path(module_file).is_relative_to(env_dir), site

    _run([str(bin_dir / "glimpse3d"), "run", str(PHOTO), "--out", "o", "--preset", "smoke", "--device", "cpu"],
         cwd=elsewhere, env=env, timeout=600)
    result = elsewhere / "o" / PHOTO.stem
    for name in OUTPUTS + (("viewer.html",) if viewer_bundle_built() else ()):  # the bundle ships when built
        assert (result / name).is_file() and (result / name).stat().st_size > 0, name
    metrics = json.loads((result / "metrics.json").read_text())
    assert metrics["preset"] == "smoke" and metrics["variant"] == "default"
    instance = (elsewhere / "o" / ".glimpse3d" / "dagster" / "dagster.yaml").read_text()
    assert "pools" in instance  # the packaged instance defaults were copied
