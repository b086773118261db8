"""The splat viewer in a real headless Chromium: viewer.html from disk and `glimpse3d view`'s gallery and pages.

Needs Debian's chromium and the built viewer bundle (`make viewer`); both are installed by .ci/run. Elsewhere the
tests skip with the reason, unless GLIMPSE3D_REQUIRE_SERVICES=1 (CI), where their absence fails.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from glimpse3d_core.cameras import intrinsics, look_at, syncdreamer16_rig
from glimpse3d_core.io.mesh import export_glb
from glimpse3d_core.io.ply import read_ply, write_ply
from glimpse3d_core.render import render_views
from glimpse3d_core.types import CameraRig, Gaussians, MeshAsset
from glimpse3d_core.viewer.page import ViewerBundleMissing, viewer_bundle, write_standalone_viewer
from glimpse3d_core.viewer.server import make_server

CHROMIUM = os.environ.get("GLIMPSE3D_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SIZE = 256
DONUT = "splats/gshairlod_donut_mipsplatting/fused.ply"
FRUIT = "splats/supersplat_fruit_drops/fruit_drops_minimal.ply"


def _unavailable(reason: str):
    if os.environ.get("GLIMPSE3D_REQUIRE_SERVICES") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    try:
        viewer_bundle()
    except ViewerBundleMissing as exc:
        _unavailable(str(exc))
    if not Path(CHROMIUM).exists():
        _unavailable(f"{CHROMIUM} not found (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _open(browser, url: str) -> tuple[object, list[str], list[str]]:
    """Open ``url``, wait for the viewer to report ready; returns (page, console errors, requested URLs)."""
    page = browser.new_page(viewport={"width": 400, "height": 400})
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(url)
    page.wait_for_function("['ready', 'error'].includes(document.body.dataset.state)", timeout=120_000)
    assert page.evaluate("document.body.dataset.state") == "ready", page.evaluate("document.body.dataset.error")
    return page, errors, requests


def _silhouette_iou(page, gaussians: Gaussians, rig: CameraRig) -> float:
    png = page.locator("#viewer canvas").screenshot(omit_background=True)
    shot = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"), dtype=np.float32) / 255.0
    assert shot.shape[:2] == (SIZE, SIZE)
    ours = render_views(gaussians, rig, backend="torch").alpha[0]
    a, b = shot[..., 3] > 0.5, ours > 0.5
    return float((a & b).sum() / max((a | b).sum(), 1))


def _camera_rig(gaussians: Gaussians) -> CameraRig:
    """A camera 30° above the object's centre, framing it."""
    centre = gaussians.means.median(0).values.numpy().astype(np.float64)
    extent = float((gaussians.means.quantile(0.98, 0) - gaussians.means.quantile(0.02, 0)).max())
    eye = centre + extent * np.array([1.2, -0.6, 0.9])
    return CameraRig(look_at(eye, centre)[None], intrinsics(280.0, SIZE, SIZE)[None], SIZE, SIZE)


def test_standalone_viewer_html_renders_the_splat_offline(browser, shared_data, tmp_path):
    gaussians = read_ply(shared_data / FRUIT)
    rig = _camera_rig(gaussians)
    html_path = write_standalone_viewer(tmp_path / "viewer.html", gaussians, rig[0], "fruit drops")
    page, errors, requests = _open(browser, f"{html_path.as_uri()}?size={SIZE}&bg=transparent&ui=0")
    assert _silhouette_iou(page, gaussians, rig) >= 0.9
    assert errors == []
    assert all(url.startswith(("file:", "blob:", "data:")) for url in requests), requests
    page.close()


def test_standalone_viewer_for_50k_gaussians_is_under_5_mb(shared_data, tmp_path):
    try:
        viewer_bundle()
    except ViewerBundleMissing as exc:
        _unavailable(str(exc))
    donut, fruit = read_ply(shared_data / DONUT), read_ply(shared_data / FRUIT)
    fruit = Gaussians(fruit.means, fruit.quats, fruit.log_scales, fruit.opacity_logits, fruit.sh0)
    gaussians = Gaussians.concat([donut, fruit.select(torch.arange(50_000 - len(donut)))])
    assert len(gaussians) == 50_000
    path = write_standalone_viewer(tmp_path / "viewer.html", gaussians, _camera_rig(gaussians)[0], "50k")
    assert path.stat().st_size < 5 * 1024 * 1024


@pytest.fixture()
def results_dir(shared_data, tmp_path) -> Path:
    """A results folder as `glimpse3d run` writes it: two finished results and one failed image."""
    root = tmp_path / "results"
    for name, source in (("donut", DONUT), ("fruit", FRUIT)):
        (root / name).mkdir(parents=True)
        shutil.copy(shared_data / source, root / name / "model.ply")
        count = len(read_ply(root / name / "model.ply"))
        (root / name / "metrics.json").write_text(json.dumps({"num_gaussians": count}))
    (root / "broken").mkdir()
    (root / "broken" / "error.json").write_text(json.dumps({"error": "cannot identify image file", "stage": "source"}))
    return root


@pytest.fixture()
def server(results_dir):
    server = make_server(results_dir, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_gallery_lists_every_result_and_shows_the_error(browser, server):
    page = browser.new_page()
    page.goto(server + "/")
    cards = page.locator("article.card")
    assert sorted(cards.evaluate_all("els => els.map(e => e.dataset.name)")) == ["broken", "donut", "fruit"]
    assert "cannot identify image file" in page.locator("article.failed").inner_text()
    assert page.locator("article.failed a").count() == 0
    assert "4,721" in page.locator('article[data-name="fruit"]').inner_text()
    page.close()


def test_mesh_toggle_shows_the_glb(browser, server, results_dir):
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.3)
    red = np.tile(np.array([[0.9, 0.1, 0.1]], dtype=np.float32), (len(sphere.vertices), 1))
    export_glb(results_dir / "donut" / "mesh.glb", MeshAsset(sphere.vertices, sphere.faces, red))
    page, errors, _ = _open(browser, f"{server}/view/donut?size={SIZE}")
    page.click("#toggle-mesh")
    page.wait_for_timeout(500)
    assert page.locator("#toggle-mesh").inner_text() == "Show splat"
    png = page.locator("#viewer canvas").screenshot()
    centre = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32)[SIZE // 2, SIZE // 2] / 255
    assert centre[0] > 0.3 and centre[0] > 2 * centre[1], centre  # the red sphere, not the donut or the background
    assert errors == []
    page.close()


def test_served_viewer_renders_the_result(browser, server, results_dir):
    gaussians = read_ply(results_dir / "fruit" / "model.ply")
    # Place the splat where the default camera (view 0 of the SyncDreamer rig) looks: centred, extent 1.
    centre = gaussians.means.median(0).values
    extent = float((gaussians.means.quantile(0.98, 0) - gaussians.means.quantile(0.02, 0)).max())
    gaussians.means = (gaussians.means - centre) / extent
    gaussians.log_scales = gaussians.log_scales - np.log(extent)
    write_ply(results_dir / "fruit" / "model.ply", gaussians)
    page, errors, requests = _open(browser, f"{server}/view/fruit?size={SIZE}&bg=transparent&ui=0")
    assert _silhouette_iou(page, gaussians, syncdreamer16_rig().subset([0])) >= 0.9
    assert errors == []
    assert all(url.startswith((server, "blob:", "data:")) for url in requests), requests
    page.close()


def test_scan_finds_variant_folders_and_skips_run_state(results_dir):
    from glimpse3d_core.viewer.gallery import scan_results

    (results_dir / "donut" / "no_refine").mkdir()
    shutil.copy(results_dir / "donut" / "model.ply", results_dir / "donut" / "no_refine" / "model.ply")
    (results_dir / ".glimpse3d" / "storage" / "x").mkdir(parents=True)
    shutil.copy(results_dir / "donut" / "model.ply", results_dir / ".glimpse3d" / "storage" / "x" / "model.ply")
    names = [e.name for e in scan_results(results_dir)]
    assert names == ["broken", "donut", "donut/no_refine", "fruit"]
