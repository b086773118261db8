"""A small read-only HTTP server for a results folder, bound to localhost only.

Routes: ``/`` the gallery, ``/view/<name>`` the viewer of one result, ``/results/<name>/<file>`` the result's files,
``/static/glimpse3d-viewer.js`` the viewer bundle. Nothing outside the results folder and the bundle is served.
"""

from __future__ import annotations

import mimetypes
from functools import partial
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

from glimpse3d_core.cameras import syncdreamer16_rig
from glimpse3d_core.orientation import exported_up, file_to_world_quaternion
from glimpse3d_core.viewer.gallery import METRICS_FILE, RESULT_FILES, gallery_page, read_json_object, scan_results
from glimpse3d_core.viewer.page import BUNDLE_NAME, ViewerCamera, render_page, viewer_bundle, viewer_facts

LOCALHOST = "127.0.0.1"
mimetypes.add_type("model/gltf-binary", ".glb")
mimetypes.add_type("application/octet-stream", ".ply")


def default_camera() -> ViewerCamera:
    """The viewer's opening camera: view 0 of the SyncDreamer rig (the input photo's side, 30° above)."""
    return ViewerCamera.from_camera(syncdreamer16_rig()[0])


class ResultsHandler(BaseHTTPRequestHandler):
    """Serves one results folder; see the module docstring for the routes."""

    def __init__(self, *args, root: Path, **kwargs):
        self.root = root.resolve()
        super().__init__(*args, **kwargs)

    def log_message(self, format: str, *args) -> None:  # keep test and CLI output quiet
        pass

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _not_found(self, what: str) -> None:
        self._send(HTTPStatus.NOT_FOUND, f"not found: {what}".encode(), "text/plain; charset=utf-8")

    def _result_folder(self, name: str) -> Path | None:
        folder = (self.root / name).resolve()
        return folder if folder != self.root and folder.is_relative_to(self.root) and folder.is_dir() else None

    def _result_file(self, parts: list[str]) -> Path | None:
        if len(parts) != 2 or (folder := self._result_folder(parts[0])) is None:
            return None
        path = (folder / parts[1]).resolve()
        return path if path.is_file() and path.parent == folder else None

    def do_GET(self) -> None:
        parts = [unquote(p) for p in urlparse(self.path).path.split("/") if p]
        if not parts:
            page = gallery_page(scan_results(self.root), title=self.root.name)
            return self._send(HTTPStatus.OK, page.encode(), "text/html; charset=utf-8")
        head, rest = parts[0], parts[1:]
        if head == "static" and rest == [BUNDLE_NAME]:
            return self._send(HTTPStatus.OK, viewer_bundle().read_bytes(), "text/javascript; charset=utf-8")
        if head == "results" and (path := self._result_file(rest)) is not None:
            content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            return self._send(HTTPStatus.OK, path.read_bytes(), content_type)
        folder = self._result_folder(rest[0]) if head == "view" and len(rest) == 1 else None
        if folder is not None and (folder / RESULT_FILES["ply"]).is_file():
            return self._send(HTTPStatus.OK, self._viewer_page(rest[0]).encode(), "text/html; charset=utf-8")
        return self._not_found(self.path)

    def _viewer_page(self, name: str) -> str:
        base = f"/results/{quote(name, safe='')}"
        folder = self.root / name
        links = {kind.upper(): f"{base}/{f}" for kind, f in RESULT_FILES.items() if (folder / f).is_file()}
        links["Gallery"] = "/"
        metrics = read_json_object(folder / METRICS_FILE) if (folder / METRICS_FILE).is_file() else {}
        return render_page(
            title=name if not metrics.get("image") else f"{metrics['image']} ({name})",
            facts=viewer_facts(metrics),
            splat_rotation=file_to_world_quaternion(exported_up(folder / RESULT_FILES["ply"])),
            splat_url=f"{base}/{RESULT_FILES['ply']}",
            splat_format="ply",
            camera=default_camera(),
            script=f'<script src="/static/{BUNDLE_NAME}"></script>',
            mesh_url=f"{base}/{RESULT_FILES['glb']}" if (folder / RESULT_FILES["glb"]).is_file() else None,
            links=links,
        )


def make_server(root: Path, port: int = 0) -> ThreadingHTTPServer:
    """A server for ``root`` on 127.0.0.1 (``port`` 0 picks a free one); call ``serve_forever()`` on it."""
    viewer_bundle()  # fail early, with the build command, when the bundle is missing
    if not Path(root).is_dir():
        raise NotADirectoryError(f"results folder {root} does not exist")
    return ThreadingHTTPServer((LOCALHOST, port), partial(ResultsHandler, root=Path(root)))
