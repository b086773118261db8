"""``glimpse3d eval``: score novel views by the SyncDreamer protocol; render a mesh's ground-truth views."""

import enum
import json
import time
from pathlib import Path

import typer

from glimpse3d_core.groundtruth import (
    NUM_PROTOCOL_VIEWS,
    GroundTruthConfig,
    read_protocol_views,
    render_ground_truth,
    write_protocol_views,
)
from glimpse3d_core.io.images import ImageFormatError
from glimpse3d_core.io.mesh import MeshFormatError
from glimpse3d_core.metrics import json_safe, novel_view_scores_for

app = typer.Typer(
    no_args_is_help=True, help="Score novel views by the SyncDreamer protocol; render a mesh's ground-truth views."
)


class Up(enum.StrEnum):
    z = "z"
    y = "y"


@app.command("nvs")
def nvs(
    pred: Path = typer.Option(..., "--pred", help="folder of predicted views 000.png .. (RGBA or RGB)"),
    gt: Path = typer.Option(..., "--gt", help="folder of ground-truth views 000.png .. (RGBA)"),
    views: int = typer.Option(NUM_PROTOCOL_VIEWS, min=1, help="number of views (000 is the input view)"),
    per_view: bool = typer.Option(False, "--per-view", help="add the per-view scores"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON line instead of text"),
) -> None:
    """PSNR, SSIM and LPIPS (null without local weights) over all views, and input_*/novel_* for view 000 and
    views 001.. separately; ``--json``: one JSON line with those keys. Images are composited on white, as the
    protocol does."""
    try:
        pred_views = read_protocol_views(pred, views)
        gt_views = read_protocol_views(gt, views)
        if pred_views.rgb.shape != gt_views.rgb.shape:
            raise ValueError(f"prediction views {pred_views.rgb.shape[1:3]} and ground truth "
                             f"{gt_views.rgb.shape[1:3]} differ in size")
    except (FileNotFoundError, ImageFormatError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    scores = novel_view_scores_for(pred_views, gt_views)
    data = json_safe(scores.as_dict() if per_view else scores.summary)
    if as_json:
        typer.echo(json.dumps(data))
        return
    for key, value in data.items():
        typer.echo(f"{key}: {', '.join(map(_number, value)) if isinstance(value, list) else _number(value)}")


def _number(value: object) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


@app.command("render-gt")
def render_gt(
    mesh: Path = typer.Argument(..., help="textured mesh: .obj (+.mtl), .glb or .gltf"),
    out: Path = typer.Option(..., "--out", help="folder for NNN.png (RGBA) and NNN-depth.png (uint16)"),
    up: Up = typer.Option(Up.z, help="the file's up axis: z (GSO OBJ) or y (glTF)"),
    rotate_z: float = typer.Option(0.0, "--rotate-z", help="turn about +Z in degrees after normalising "
                                   "(counter-clockwise from above; the protocol's chicken: 90)"),
    size: int = typer.Option(256, min=16, max=4096, help="image width = height (the protocol: 256)"),
    supersample: int = typer.Option(1, min=1, max=8, help="rays per pixel along each axis (alpha anti-aliasing)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON line (views, size, out, seconds)"),
) -> None:
    """Render the SyncDreamer protocol's 16 views of a mesh (normalised to unit extent, bbox centred)."""
    config = GroundTruthConfig(image_size=size, up=up.value, rotate_z_deg=rotate_z, supersample=supersample)
    start = time.perf_counter()
    try:
        views = render_ground_truth(mesh, config)
    except MeshFormatError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    write_protocol_views(out, views)
    seconds = time.perf_counter() - start
    if as_json:
        typer.echo(json.dumps({"views": len(views), "size": size, "out": str(out), "seconds": seconds}))
    else:
        typer.echo(f"wrote {len(views)} views ({size}x{size}, RGBA + depth) to {out} in {seconds:.1f} s")
