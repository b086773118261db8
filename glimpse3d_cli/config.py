"""``glimpse3d config``: the resolved pipeline configuration as YAML (what ``run`` would use)."""

from __future__ import annotations

from typing import Annotated

import typer
import yaml

from glimpse3d_core.config import ConfigError, PipelineConfig, parse_assignments


def config(
    preset: Annotated[str, typer.Option(help="preset: fast | quality | smoke")] = "fast",
    set_: Annotated[list[str], typer.Option("--set", help="FIELD.PATH=VALUE override (repeatable)")] = [],  # noqa: B006
) -> None:
    """Print the resolved configuration (a preset with --set overrides) as YAML; an unknown field exits 2, naming
    it and the valid names. The output can be edited and read back by research scripts (PipelineConfig.load)."""
    try:
        resolved = PipelineConfig.from_preset(preset).with_overrides(parse_assignments(set_))
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    typer.echo(yaml.safe_dump(resolved.model_dump(mode="json"), sort_keys=False), nl=False)
