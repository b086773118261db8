"""``glimpse3d inspect FILE.ply``: validate a Gaussian-splat PLY and describe it."""

import json
from pathlib import Path

import typer

from glimpse3d_core.io.ply import PlyFormatError, inspect_ply


def inspect(
    path: Path = typer.Argument(..., help="INRIA 3DGS .ply file"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object instead of text"),
) -> None:
    """Count, SH degree, bounds and property list of a splat PLY; exit code 2 if it is not a readable INRIA PLY."""
    try:
        info = inspect_ply(path)
    except PlyFormatError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if as_json:
        typer.echo(json.dumps(info.as_dict()))
        return
    lo, hi = info.bounds_min, info.bounds_max
    typer.echo(f"{info.path}: {info.num_gaussians:,} Gaussians, SH degree {info.sh_degree}, {info.encoding}")
    typer.echo("bounds: " + "  ".join(f"{axis} [{a:.4g}, {b:.4g}]" for axis, a, b in zip("xyz", lo, hi, strict=True)))
    typer.echo("properties: " + " ".join(f"{name}:{dtype}" for name, dtype in info.properties))
    if info.extra_properties:
        typer.echo("ignored (not INRIA): " + " ".join(info.extra_properties))
