"""HTML pages around the splat viewer bundle: the self-contained ``viewer.html`` and the pages ``glimpse3d view``
serves.

The JavaScript bundle (three.js + gaussian-splats-3d, pinned in ``web/package.json``) is built by ``make viewer``
into ``glimpse3d_core/viewer/static/``; it is not committed, but a wheel built after ``make viewer`` ships it.
The page template and the bundle are package data, read with :mod:`importlib.resources`. Without the bundle,
:func:`viewer_bundle` raises :class:`ViewerBundleMissing` and the rest of the package works as before.

Cameras: the page takes a three.js-style camera (position, look-at point, up vector, vertical field of view in
degrees) in our world frame (+Z up). :meth:`ViewerCamera.from_camera` converts an OpenCV pinhole camera with a
centred principal point exactly, so a screenshot of a square canvas matches our renderer's image of that camera.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import tempfile
from dataclasses import asdict, dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from glimpse3d_core.io.atomic import atomic_write_bytes
from glimpse3d_core.io.ply import export_splat
from glimpse3d_core.types import Camera, Gaussians

VIEWER_PACKAGE = resources.files(__package__)
BUNDLE_NAME = "glimpse3d-viewer.js"
PAGE_TEMPLATE = (VIEWER_PACKAGE / "page.html").read_text(encoding="utf-8")


class ViewerBundleMissing(RuntimeError):
    """The viewer's JavaScript bundle has not been built."""


def viewer_bundle() -> Traversable:
    """The built viewer bundle (read it with ``read_text``/``read_bytes``); raises :class:`ViewerBundleMissing`
    naming the build command."""
    path = VIEWER_PACKAGE / "static" / BUNDLE_NAME
    if not viewer_bundle_built():
        raise ViewerBundleMissing(
            f"the splat viewer bundle {path} is not built: run `make viewer` (needs node and npm)"
        )
    return path


def viewer_bundle_built() -> bool:
    return (VIEWER_PACKAGE / "static" / BUNDLE_NAME).is_file()


@dataclass(frozen=True)
class ViewerCamera:
    """A camera as three.js takes it: world position, look-at point, up vector, vertical FoV in degrees."""

    position: tuple[float, float, float]
    lookAt: tuple[float, float, float]
    up: tuple[float, float, float]
    fovYDeg: float

    @classmethod
    def from_camera(cls, camera: Camera) -> ViewerCamera:
        c2w = camera.camtoworld
        position = c2w[:3, 3]
        forward, down = c2w[:3, 2], c2w[:3, 1]
        fov = math.degrees(2.0 * math.atan(camera.height / 2.0 / float(camera.K[1, 1])))
        return cls(
            tuple(float(v) for v in position),
            tuple(float(v) for v in position + forward),
            tuple(float(-v) for v in down),
            fov,
        )


def viewer_facts(metrics: dict) -> dict[str, str]:
    """The key metrics a viewer page shows in its header (those present in ``metrics``, as metrics.json has them)."""
    facts = {}
    if isinstance(metrics.get("num_gaussians"), int | float):
        facts["Gaussians"] = f"{int(metrics['num_gaussians']):,}"
    if isinstance(metrics.get("input_psnr"), int | float):
        facts["input PSNR"] = f"{metrics['input_psnr']:.1f} dB"
    if metrics.get("variant"):
        facts["variant"] = str(metrics["variant"])
    return facts


def render_page(
    *,
    title: str,
    splat_url: str,
    splat_format: str,
    camera: ViewerCamera,
    script: str,
    mesh_url: str | None = None,
    links: dict[str, str] | None = None,
    facts: dict[str, str] | None = None,
    splat_rotation: list[float] | None = None,
) -> str:
    """One viewer page. ``script`` is either a ``<script src=...>`` tag or an inline ``<script>`` element;
    ``facts`` (label -> value) are shown in the header after the title; ``splat_rotation`` [x, y, z, w] turns the
    splat file's frame into our world (see ``glimpse3d_core.stages.export.file_to_world_quaternion``)."""
    config = {
        "splat": {"url": splat_url, "format": splat_format,
                  **({"rotation": splat_rotation} if splat_rotation else {})},
        "mesh": {"url": mesh_url} if mesh_url else None,
        "camera": asdict(camera),
    }
    link_html = " ".join(
        f'<a href="{html.escape(href, quote=True)}">{html.escape(label)}</a>' for label, href in (links or {}).items()
    )
    fact_html = " · ".join(
        f'<span data-fact="{html.escape(label, quote=True)}">{html.escape(label)} {html.escape(value)}</span>'
        for label, value in (facts or {}).items()
    )
    fields = {
        "TITLE": html.escape(title),
        "FACTS": fact_html,
        "LINKS": link_html,
        "SCRIPT": script,
        "CONFIG": json.dumps(config).replace("</", "<\\/"),
    }
    # One pass, so text inside an inserted field (the bundle, the data) is never substituted again.
    return re.sub(r"\{\{(TITLE|FACTS|LINKS|SCRIPT|CONFIG)\}\}", lambda m: fields[m.group(1)], PAGE_TEMPLATE)


def write_standalone_viewer(path: str | Path, gaussians: Gaussians, camera: Camera, title: str,
                            facts: dict[str, str] | None = None) -> Path:
    """Write a ``viewer.html`` that opens from disk with no server and no network: the viewer code and the
    splat (antimatter15 ``.splat``, 32 bytes per Gaussian, in our world frame as ``camera``) are inline. Atomic.
    ``title`` (the image's name) and ``facts`` (key metrics) head the page."""
    bundle = viewer_bundle().read_text(encoding="utf-8").replace("</script", "<\\/script")
    with tempfile.TemporaryDirectory() as tmp:
        splat = export_splat(Path(tmp) / "model.splat", gaussians, format="splat").read_bytes()
    data = base64.b64encode(splat).decode("ascii")
    script = (
        f"<script>{bundle}</script>\n"
        f'<script id="splat-data" type="application/octet-stream">{data}</script>\n'
        "<script>window.GLIMPSE3D_SPLAT_URL = Glimpse3DViewer.blobUrlFromBase64("
        "document.getElementById('splat-data').textContent);</script>"
    )
    page = render_page(
        title=title, splat_url="{{INLINE}}", splat_format="splat", camera=ViewerCamera.from_camera(camera),
        script=script, facts=facts,
    )
    return atomic_write_bytes(path, page.encode("utf-8"))
