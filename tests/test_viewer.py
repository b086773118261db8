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
from glimpse3d_core.io.mesh import export_textured_glb
from glimpse3d_core.io.ply import read_ply, write_ply
from glimpse3d_core.orientation import file_to_world_quaternion, world_to_file
from glimpse3d_core.render import render_views
from glimpse3d_core.stages.export import SPLAT_FILES, ExportConfig, write_splat_files
from glimpse3d_core.texture import UVMesh
from glimpse3d_core.types import CameraRig, Gaussians, rgb_to_sh0
from glimpse3d_core.viewer.page import (
    BUNDLE_NAME,
    ViewerBundleMissing,
    ViewerCamera,
    render_page,
    viewer_bundle,
    write_standalone_viewer,
)
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


def test_mesh_toggle_shows_the_textured_glb(browser, server, results_dir):
    """A UV-textured sphere: red texture rows for the upper hemisphere (+Z, v > 0.5), blue for the lower."""
    sphere = trimesh.creation.uv_sphere(radius=0.3, count=[32, 32])
    v = np.clip(0.5 + np.arcsin(np.clip(sphere.vertices[:, 2] / 0.3, -1, 1)) / np.pi, 0, 1)
    u = (np.arctan2(sphere.vertices[:, 1], sphere.vertices[:, 0]) / (2 * np.pi)) % 1.0
    texture = np.zeros((64, 64, 3), np.float32)
    texture[:32] = (0.9, 0.1, 0.1)  # rows 0..31 = v in (0.5, 1]: the top (trimesh UVs: v up)
    texture[32:] = (0.1, 0.1, 0.9)
    grey = np.full((len(sphere.vertices), 3), 0.5, np.float32)
    export_textured_glb(results_dir / "donut" / "mesh.glb",
                        UVMesh(sphere.vertices, sphere.faces, np.stack([u, v], 1), texture, grey))
    page, errors, _ = _open(browser, f"{server}/view/donut?size={SIZE}")
    page.click("#toggle-mesh")
    page.wait_for_timeout(500)
    assert page.locator("#toggle-mesh").inner_text() == "Show splat"
    png = page.locator("#viewer canvas").screenshot()
    shot = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32) / 255
    # view 0 looks down 30°: the sphere's centre pixel shows latitude +30° (red), 45 px below it about -20° (blue)
    top, bottom = shot[SIZE // 2, SIZE // 2], shot[SIZE // 2 + 45, SIZE // 2]
    assert top[0] > 0.3 and top[0] > 2 * top[2], top
    assert bottom[2] > 0.3 and bottom[2] > 2 * bottom[0], bottom
    assert errors == []
    page.close()


def _unit_fruit(shared_data) -> Gaussians:
    """The SuperSplat fruit splat (SH degree 3) centred with extent 1, where view 0 of the rig looks."""
    gaussians = read_ply(shared_data / FRUIT)
    centre = gaussians.means.median(0).values
    extent = float((gaussians.means.quantile(0.98, 0) - gaussians.means.quantile(0.02, 0)).max())
    gaussians.means = (gaussians.means - centre) / extent
    gaussians.log_scales = gaussians.log_scales - np.log(extent)
    return gaussians


def _format_page(folder: Path, name: str, fmt: str, up: str, camera: ViewerCamera, rotate: bool = True) -> str:
    """Write a viewer page for ``folder/SPLAT_FILES[fmt]`` into the result folder; returns its served path."""
    page = render_page(
        title=fmt, splat_url=f"/results/{name}/{SPLAT_FILES[fmt]}",
        splat_format=fmt, camera=camera,
        script=f'<script src="/static/{BUNDLE_NAME}"></script>',
        splat_rotation=file_to_world_quaternion(up, spz=fmt == "spz") if rotate else None,
    )
    (folder / f"{fmt}.html").write_text(page)
    return f"/results/{name}/{fmt}.html"


def test_every_splat_format_opens_in_the_viewer(browser, server, results_dir, shared_data):
    """model.ply, .splat, .spz and SuperSplat's compressed PLY, written -Y up (the default), each decoded by the
    viewer's own loaders and turned back into our world: the silhouette matches our renderer's."""
    gaussians = _unit_fruit(shared_data)
    folder = results_dir / "formats"
    folder.mkdir()
    config = ExportConfig(formats=("splat", "spz", "ply_compressed"))
    assert config.up == "-y"
    files = write_splat_files(gaussians, folder, config)
    assert set(files) == {"ply", "splat", "spz", "ply_compressed"}
    rig = syncdreamer16_rig().subset([0])
    for fmt in files:
        url = _format_page(folder, "formats", fmt, config.up, ViewerCamera.from_camera(rig[0]))
        page, errors, _ = _open(browser, f"{server}{url}?size={SIZE}&bg=transparent&ui=0")
        iou = _silhouette_iou(page, gaussians, rig)
        assert iou >= 0.9, (fmt, iou)
        assert errors == [], (fmt, errors)
        page.close()


def _column() -> Gaussians:
    """A vertical column in our +Z-up world: red in its upper half, blue in its lower half."""
    z = torch.linspace(-0.45, 0.45, 400)
    means = torch.stack([torch.zeros_like(z), torch.zeros_like(z), z], 1)
    rgb = torch.where((z > 0)[:, None], torch.tensor([0.9, 0.1, 0.1]), torch.tensor([0.1, 0.1, 0.9]))
    n = len(z)
    return Gaussians(means=means, quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
                     log_scales=torch.full((n, 3), float(np.log(0.03))), opacity_logits=torch.full((n,), 4.0),
                     sh0=rgb_to_sh0(rgb)[:, None])


def _red_above_blue(page) -> bool:
    png = page.locator("#viewer canvas").screenshot()
    shot = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32) / 255
    rows = np.arange(shot.shape[0])[:, None].repeat(shot.shape[1], 1)
    red = (shot[..., 0] > 0.5) & (shot[..., 2] < 0.3)
    blue = (shot[..., 2] > 0.5) & (shot[..., 0] < 0.3)
    assert red.sum() > 50 and blue.sum() > 50, (red.sum(), blue.sum())
    return float(rows[red].mean()) < float(rows[blue].mean())


def test_exported_ply_is_upright(browser, server, results_dir):
    """The exported model.ply (default up: -Y, the INRIA/COLMAP convention) opens upright both in `glimpse3d view`
    (its default camera; it reads splat_up from metrics.json) and under a camera whose up is -Y in the file's
    own frame, as SuperSplat and INRIA viewers show it."""
    folder = results_dir / "column"
    folder.mkdir()
    config = ExportConfig()
    write_splat_files(_column(), folder, config)
    (folder / "metrics.json").write_text(json.dumps({"splat_up": config.up, "image": "column.png"}))
    page, errors, _ = _open(browser, f"{server}/view/column?size={SIZE}&bg=transparent")
    assert _red_above_blue(page)
    assert page.title().startswith("column.png")
    assert errors == []
    page.close()

    # the raw file, no rotation: a camera in front of it with up = -Y of the file
    to_file = world_to_file(config.up)
    eye = to_file @ np.array([1.5, 0.0, 0.0])
    camera = ViewerCamera(tuple(eye), (0.0, 0.0, 0.0), tuple(to_file @ np.array([0.0, 0.0, 1.0])), 50.0)
    assert camera.up == (0.0, -1.0, 0.0)
    page, errors, _ = _open(browser, f"{server}{_format_page(folder, 'column', 'ply', config.up, camera, False)}"
                            f"?size={SIZE}&bg=transparent")
    assert _red_above_blue(page)
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
