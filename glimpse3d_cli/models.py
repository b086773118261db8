"""``glimpse3d models``: list, download, verify model weights; check our architectures' checkpoint layouts."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from glimpse3d_core.models.errors import ModelError, download_command
from glimpse3d_core.models.registry import MODELS, ModelSpec, get_spec
from glimpse3d_core.models.store import ModelStore, Status

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
console = Console()

STATUS_STYLE = {Status.PRESENT: "green", Status.MISSING: "red", Status.INCOMPLETE: "yellow",
                Status.WRONG_SIZE: "red"}


def human_size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} B"


def _specs(ids: list[str] | None) -> list[ModelSpec]:
    try:
        return [get_spec(i) for i in ids] if ids else list(MODELS.values())
    except ModelError as exc:
        console.print(f"[red]{exc}")
        raise typer.Exit(2) from exc


PARTIAL = (Status.WRONG_SIZE, Status.INCOMPLETE)


def model_rows(store: ModelStore) -> list[dict]:
    """One dict per registered model: id, stage, status, size_bytes, licence, location and root (where it was
    found, else null), problems (wrong or missing files) and download (the command that fetches it)."""
    rows = []
    for spec in MODELS.values():
        status = store.status(spec)
        located = status.status is not Status.MISSING
        rows.append({"id": spec.id, "stage": spec.stage, "status": status.status.value, "size_bytes": spec.size,
                     "licence": spec.licence, "location": status.location if located else None,
                     "root": str(status.root) if located and status.root else None,
                     "problems": [p.strip() for p in status.problems()] if status.status in PARTIAL else [],
                     "download": download_command([spec.id])})
    return rows


@app.command("list")
def list_models(
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object (folders and models)")] = False,
) -> None:
    """Every model the pipeline can use, with its status on this machine and how to fetch it. A table on a
    terminal; tab-separated lines, nothing shortened, when stdout is a pipe or a file."""
    store = ModelStore()
    rows = model_rows(store)
    if as_json:
        typer.echo(json.dumps({"models_dir": str(store.models_dir), "hf_cache_dir": str(store.hf_cache_dir),
                               "models": rows}))
        return
    where = {r["id"]: (f"{r['location']}: {r['root']}" if r["status"] == Status.PRESENT.value else r["download"])
             for r in rows}
    if not sys.stdout.isatty():
        typer.echo(f"# models folder: {store.models_dir}\n# Hugging Face cache: {store.hf_cache_dir}")
        typer.echo("\t".join(("id", "stage", "status", "size", "licence", "where / how to get it", "problems")))
        for r in rows:
            typer.echo("\t".join((r["id"], r["stage"], r["status"], human_size(r["size_bytes"]), r["licence"],
                                  where[r["id"]], "; ".join(r["problems"]))))
        return
    table = Table(title=f"models (folder: {store.models_dir}; Hugging Face cache: {store.hf_cache_dir})")
    for column in ("id", "stage", "status", "size", "licence", "where / how to get it"):
        table.add_column(column, overflow="fold")
    for r in rows:
        text = where[r["id"]]
        if r["problems"]:
            text = f"{r['location']}: {r['root']}\n" + "\n".join(f"  {p}" for p in r["problems"]) + f"\n{text}"
        table.add_row(r["id"], r["stage"], f"[{STATUS_STYLE[Status(r['status'])]}]{r['status']}",
                      human_size(r["size_bytes"]), r["licence"], text)
    console.print(table)


@app.command("download")
def download(
    ids: Annotated[list[str] | None, typer.Argument(help="model ids (see `glimpse3d models list`)")] = None,
    all_models: Annotated[bool, typer.Option("--all", help="every registered model (tens of GB)")] = False,
) -> None:
    """Fetch models into the model folder (needs network access; an interrupted download resumes)."""
    if not ids and not all_models:
        console.print("name the models to fetch (see `glimpse3d models list`) or pass --all")
        raise typer.Exit(2)
    store = ModelStore()
    failed = []
    for spec in _specs(None if all_models else ids):
        try:
            status = store.download(spec, progress=console.print)
            console.print(f"[green]{spec.id}: present in {status.root}")
        except ModelError as exc:
            failed.append(spec.id)
            console.print(f"[red]{exc}")
    if failed:
        console.print(f"[red]not downloaded: {', '.join(failed)}")
        raise typer.Exit(1)


@app.command("verify")
def verify(
    ids: Annotated[list[str] | None, typer.Argument(help="model ids (default: every present model)")] = None,
) -> None:
    """Check present models fully: checksums, file structure, a strict load of each architecture (CPU), and each
    weight file's key names and shapes against the released file's key list."""
    from glimpse3d_core.backends.verify import verify_model

    store = ModelStore()
    failed, checked = [], 0
    for spec in _specs(ids):
        status = store.status(spec)
        if not status.present:
            if ids:
                failed.append(spec.id)
                console.print(f"[red]{spec.id}: {status.status.value}; fetch it with `{download_command([spec.id])}`")
            continue
        checked += 1
        try:
            for line in verify_model(status, store):
                console.print(f"{spec.id}: {line}")
            console.print(f"[green]{spec.id}: ok")
        except ModelError as exc:
            failed.append(spec.id)
            console.print(f"[red]{exc}")
    if checked == 0 and not failed:
        console.print("no model is present on this machine (see `glimpse3d models list`)")
    if failed:
        raise typer.Exit(1)


@app.command("check-layout")
def check_layout(
    name: Annotated[str, typer.Argument(help="a layout name: triposr, syncdreamer, or a library model's weight file "
                                        "(dpt-large, sdxl-base.text_encoder, ...; an unknown name lists them)")],
    against: Annotated[Path | None, typer.Option(help="layout JSON (default: the packaged reference)")] = None,
) -> None:
    """Build the full architecture on the meta device and compare its state dict with a released key list."""
    from glimpse3d_core.models.layout import LayoutError
    from glimpse3d_core.models.layout import check_layout as compare_layout

    try:
        report = compare_layout(name, against)
    except LayoutError as exc:
        console.print(f"[red]{exc}")
        raise typer.Exit(2) from exc
    console.print(f"matched {len(report.matched)}, missing {len(report.missing)}, "
                  f"unexpected {len(report.unexpected)}, shape mismatches {len(report.shape_mismatch)}")
    for label, keys in (("missing", report.missing), ("unexpected", report.unexpected)):
        for key in keys:
            console.print(f"  {label}: {key}")
    for key, ours, ref in report.shape_mismatch:
        console.print(f"  shape: {key} ours {list(ours)} reference {list(ref)}")
    console.print(("[green]" if report.ok else "[red]") + report.summary())
    if not report.ok:
        raise typer.Exit(1)
