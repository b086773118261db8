"""The gallery of a results folder: one card per result (thumbnail, key metrics, file links) or its error.

A results folder holds one sub-folder per image, as ``glimpse3d run --out DIR`` writes it: a finished result has
``model.ply`` (and usually ``mesh.glb``, ``turntable.mp4``, ``preview.png``, ``metrics.json``); a failed one has
``error.json`` (``{"error": message, "stage": name}``) instead.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

RESULT_FILES = {
    "ply": "model.ply", "splat": "model.splat", "spz": "model.spz", "ply_compressed": "model.compressed.ply",
    "glb": "mesh.glb", "glb_vertexcolor": "mesh_vertexcolor.glb", "obj": "mesh.obj", "mp4": "turntable.mp4",
    "html": "viewer.html",
}
PREVIEW_FILE = "preview.png"
METRICS_FILE = "metrics.json"
ERROR_FILE = "error.json"
# Metrics shown on a card, in order: (key in metrics.json, label, format).
CARD_METRICS = (
    ("num_gaussians", "Gaussians", "{:,.0f}"),
    ("input_psnr", "input PSNR", "{:.2f} dB"),
    ("input_ssim", "input SSIM", "{:.3f}"),
    ("silhouette_iou", "silhouette IoU", "{:.3f}"),
    ("total_seconds", "time", "{:.1f} s"),
)


@dataclass
class ResultEntry:
    """One sub-folder of a results folder."""

    name: str
    folder: Path
    error: str | None = None
    metrics: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    def has(self, filename: str) -> bool:
        return (self.folder / filename).is_file()


def read_json_object(path: Path) -> dict:
    """A JSON object file; an unreadable or non-object one gives ``{"error": why}``."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return {"error": f"unreadable {path.name}: {exc}"}
    return value if isinstance(value, dict) else {"error": f"{path.name} is not a JSON object"}


def scan_results(root: Path) -> list[ResultEntry]:
    """Every result (finished or failed) under ``root``, sorted by name. A result's name is its folder's path
    relative to ``root`` (``key``, or ``key/variant`` when one run delivered several variants)."""
    entries = []
    root = Path(root)
    for folder in sorted(p for p in root.rglob("*") if p.is_dir()):
        relative = folder.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue  # the run's own state (.glimpse3d/) and staging folders
        name = relative.as_posix()
        if (folder / ERROR_FILE).is_file():
            info = read_json_object(folder / ERROR_FILE)
            stage = f" (stage {info['stage']})" if info.get("stage") else ""
            entries.append(ResultEntry(name, folder, error=f"{info.get('error', 'failed')}{stage}"))
        elif (folder / RESULT_FILES["ply"]).is_file():
            metrics = read_json_object(folder / METRICS_FILE) if (folder / METRICS_FILE).is_file() else {}
            entries.append(ResultEntry(name, folder, metrics=metrics))
    return entries


def _flatten(metrics: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        flat.setdefault(key, value)
    return flat


def _card(entry: ResultEntry) -> str:
    name = html.escape(entry.name)
    url_name = quote(entry.name, safe="")
    base = f"/results/{url_name}"
    if not entry.ok:
        error = html.escape(entry.error)
        return f'<article class="card failed" data-name="{name}"><h2>{name}</h2><p class="error">{error}</p></article>'
    thumb = f'<img src="{base}/{PREVIEW_FILE}" alt="{name} preview">' if entry.has(PREVIEW_FILE) else ""
    flat = _flatten(entry.metrics)
    rows = "".join(
        f"<tr><th>{label}</th><td>{fmt.format(flat[key])}</td></tr>"
        for key, label, fmt in CARD_METRICS
        if isinstance(flat.get(key), int | float)
    )
    links = " ".join(
        f'<a href="{base}/{filename}">{kind.upper()}</a>'
        for kind, filename in RESULT_FILES.items()
        if entry.has(filename)
    )
    return (
        f'<article class="card" data-name="{name}"><h2><a href="/view/{url_name}">{name}</a></h2>'
        f'<a href="/view/{url_name}">{thumb}</a><table>{rows}</table><p>{links}</p></article>'
    )


def gallery_page(entries: list[ResultEntry], title: str) -> str:
    """The gallery's HTML (no scripts; every link is relative to the server)."""
    cards = "\n".join(_card(e) for e in entries) or "<p>No results in this folder yet.</p>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">
<title>{html.escape(title)} · Glimpse3D</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 20px; background: #f4f4f6; }}
main {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 16px; }}
.card {{ background: white; border-radius: 8px; padding: 12px; box-shadow: 0 1px 3px #0002; }}
.card img {{ width: 100%; border-radius: 4px; }}
.card.failed {{ border-left: 4px solid #c33; }} .error {{ color: #a11; white-space: pre-wrap; }}
th {{ text-align: left; font-weight: normal; color: #555; padding-right: 12px; }}
</style></head>
<body><h1>{html.escape(title)}</h1><main>
{cards}
</main></body></html>
"""
