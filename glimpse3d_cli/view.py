"""``glimpse3d view OUT_DIR``: serve a results folder's gallery and splat viewers on localhost."""

from pathlib import Path

import typer

from glimpse3d_core.viewer.page import ViewerBundleMissing
from glimpse3d_core.viewer.server import make_server


def view(
    out_dir: Path = typer.Argument(..., help="results folder written by `glimpse3d run --out`"),
    port: int = typer.Option(8000, help="port on 127.0.0.1 (0 picks a free one)"),
) -> None:
    """Serve a gallery of every result in OUT_DIR and an interactive viewer per result (localhost only)."""
    try:
        server = make_server(out_dir, port)
    except (ViewerBundleMissing, NotADirectoryError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    host, bound_port = server.server_address[:2]
    typer.echo(f"Glimpse3D gallery of {out_dir} at http://{host}:{bound_port}/  (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
