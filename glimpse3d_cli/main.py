"""Entry point of the ``glimpse3d`` command: each sub-command lives in its own module."""

import typer

from glimpse3d_cli import bench, config, inspect, models, render, run, view, worker
from glimpse3d_cli import eval as eval_cmd

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Glimpse3D: single photos of objects -> 3D Gaussian splats, coloured meshes and turntables, in batches.",
)
app.command("run")(run.run)
app.command("rerun")(run.rerun)
app.command("config")(config.config)
app.command("view")(view.view)
app.command("bench")(bench.bench)
app.command("inspect")(inspect.inspect)
app.command("render")(render.render)
app.add_typer(eval_cmd.app, name="eval")
app.add_typer(models.app, name="models")
app.command("worker")(worker.worker)

if __name__ == "__main__":
    app()
