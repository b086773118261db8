"""Entry point of the ``glimpse3d`` command: each sub-command lives in its own module."""

import typer

from glimpse3d_cli import view

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
app.command("view")(view.view)

if __name__ == "__main__":
    app()
