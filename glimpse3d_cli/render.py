"""``glimpse3d render FILE.ply --out DIR``: render a splat into RGBA PNGs named as the protocol names views."""

import enum
from pathlib import Path

import torch
import typer

from glimpse3d_core.cameras import syncdreamer16_rig, turntable_rig
from glimpse3d_core.groundtruth import view_filename
from glimpse3d_core.io.images import save_png
from glimpse3d_core.io.ply import PlyFormatError, read_ply
from glimpse3d_core.orientation import exported_up, from_file_frame
from glimpse3d_core.render import render_views


class RigName(enum.StrEnum):
    syncdreamer16 = "syncdreamer16"
    turntable = "turntable"


class UpName(enum.StrEnum):
    auto = "auto"
    minus_y = "-y"
    y = "y"
    z = "z"


class DeviceName(enum.StrEnum):
    cpu = "cpu"
    cuda = "cuda"


def render(
    path: Path = typer.Argument(..., help="INRIA 3DGS .ply file (object near the origin)"),
    out: Path = typer.Option(..., "--out", help="output folder for 000.png, 001.png, ..."),
    rig: RigName = typer.Option(RigName.syncdreamer16, help="cameras: SyncDreamer's 16 views or a turntable orbit"),
    device: DeviceName = typer.Option(DeviceName.cpu, help="cpu: our PyTorch rasteriser; cuda: gsplat"),
    size: int = typer.Option(256, min=16, max=4096, help="image width = height in pixels"),
    frames: int = typer.Option(36, min=1, help="turntable frames (ignored for syncdreamer16)"),
    up: UpName = typer.Option(UpName.auto, help="the file's up axis; auto: splat_up of the metrics.json beside it "
                              "(Glimpse3D exports: -y by default), else z"),
) -> None:
    """Render every camera of the rig to straight-colour RGBA PNGs (alpha = accumulated opacity)."""
    if device is DeviceName.cuda and not torch.cuda.is_available():
        typer.echo("error: --device cuda asked for, but no CUDA GPU is available here", err=True)
        raise typer.Exit(2)
    try:
        file_up = exported_up(path) if up is UpName.auto else up.value
        gaussians = from_file_frame(read_ply(path), file_up).to(device.value)
    except PlyFormatError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    cameras = syncdreamer16_rig(size) if rig is RigName.syncdreamer16 else turntable_rig(frames, image_size=size)
    views = render_views(gaussians, cameras)
    for i in range(len(views)):
        save_png(out / view_filename(i), views.rgb[i], views.alpha[i])
    typer.echo(f"wrote {len(views)} views of {len(gaussians):,} Gaussians to {out}")
