"""``glimpse3d bench``: the asset graph on ground truth, scored by the SyncDreamer protocol.

For every object folder under GT_ROOT (000.png .. 015.png, view 0 the input; as ``eval render-gt`` writes them and
as the protocol ships the chicken's ``-gt`` folder) and every variant: materialise the same asset graph as
``glimpse3d run`` with view 0 as the photo and the known ``syncdreamer16`` input camera, render the exported
``model.ply`` (turned from its ``splat_up`` file frame back into our +Z-up world) from the ground truth's 16 cameras
and score it (:mod:`glimpse3d_core.benchmark`). The scores go, prefixed ``gt.``, into the (image, variant)'s MLflow
run that ``quality_metrics`` opened (so ``research/compare.py`` and the MLflow UI rank variants by
``gt.novel_psnr``); stdout gets one JSON line per (object, variant), stderr a table per variant (mean and standard
deviation over the objects). Layout of ``--out`` as ``glimpse3d run``'s, plus
``DIR/.glimpse3d/bench_inputs/<object>.png`` (the input photos) and ``DIR/bench.json`` (every score).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from glimpse3d_cli.run import Runner, Workspace, _settings, resolve_preset
from glimpse3d_core.benchmark import find_objects, load_ground_truth, score_gaussians
from glimpse3d_core.config import parse_assignments
from glimpse3d_core.groundtruth import view_filename
from glimpse3d_core.io.atomic import atomic_write_bytes
from glimpse3d_core.metrics import json_safe
from glimpse3d_core.naming import assign_keys
from glimpse3d_core.orientation import read_exported

METRIC_PREFIX = "gt."
"""Prefix of the ground-truth scores in MLflow (beside the run's own metrics)."""
TABLE_METRICS = ("input_psnr", "novel_psnr", "input_ssim", "novel_ssim", "novel_lpips", "novel_iou", "chamfer",
                 "fscore")


def log_scores(tracking_uri: str, experiment: str, image: str, variant: str, scores: dict[str, float]) -> str:
    """Add ``scores`` (prefixed ``gt.``) to the latest MLflow run of (image, variant); returns its run id."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs(
        [found.experiment_id] if found else [], filter_string=f"tags.image = '{image}' and tags.variant = '{variant}'",
        order_by=["attributes.start_time DESC"], max_results=1) if found else []
    if not runs:
        raise RuntimeError(f"no MLflow run of {image}/{variant} in experiment {experiment!r} at {tracking_uri}")
    run = runs[0]
    client.log_batch(run.info.run_id, metrics=[
        Metric(METRIC_PREFIX + k, float(v), run.info.start_time, 0) for k, v in scores.items() if math.isfinite(v)])
    return run.info.run_id


def variant_table(rows: list[dict]) -> str:
    """Markdown: one row per variant, mean ± standard deviation over its objects of :data:`TABLE_METRICS`."""
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    metrics = [m for m in TABLE_METRICS if any(m in r["scores"] for r in rows)]
    lines = ["| variant | objects | " + " | ".join(metrics) + " |", "| --- | ---: |" + " ---: |" * len(metrics)]
    for name in variants:
        mine = [r["scores"] for r in rows if r["variant"] == name]
        cells = []
        for m in metrics:
            values = np.array([s[m] for s in mine if m in s], np.float64)
            cells.append(f"{values.mean():.3f} ± {values.std():.3f}" if values.size else "")
        lines.append(f"| {name} | {len(mine)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def object_table(rows: list[dict]) -> str:
    """Markdown: one row per (object, variant) with input/novel PSNR and what refine did."""
    lines = ["| object | variant | input PSNR | novel PSNR | novel SSIM | novel IoU | chamfer | refine accepted | "
             "gate: input view PSNR before → after | gate: other views PSNR before → after | depth views judged | "
             "depth-consistency R² |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]

    def cell(value, digits: int) -> str:
        return f"{value:.{digits}f}" if isinstance(value, int | float) else ""

    for r in sorted(rows, key=lambda r: r["object"]):
        s, f = r["scores"], r.get("refine", {})
        cells = [cell(s.get("input_psnr"), 2), cell(s.get("novel_psnr"), 2), cell(s.get("novel_ssim"), 3),
                 cell(s.get("novel_iou"), 3), cell(s.get("chamfer"), 4), str(f.get("accepted", "")),
                 *(f"{cell(f.get(k + '_before'), 2)} → {cell(f.get(k + '_after'), 2)}" if k + "_after" in f else ""
                   for k in ("input_psnr", "views_psnr")),
                 str(f.get("depth_views_used", "")), cell(f.get("depth_consistency_r2"), 3)]
        lines.append(f"| {r['object']} | {r['variant']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(path: Path, rows: list[dict], header: str) -> None:
    """``path`` (Markdown: the variant table and the per-object table) and the rows as JSON beside it."""
    text = f"{header}\n\n## Per variant (mean ± std over objects)\n\n{variant_table(rows)}\n" \
           f"## Per object\n\n{object_table(rows)}"
    atomic_write_bytes(path, text.encode())
    atomic_write_bytes(path.with_suffix(".json"), json.dumps(rows, indent=1).encode())


def bench(
    gt_root: Annotated[Path, typer.Argument(help="folder of object folders, each with 000.png .. 015.png")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder (as `glimpse3d run --out`)")] = Path("bench"),
    variants: Annotated[list[str], typer.Option("--variants", help="variant(s) from glimpse3d_assets/ablations.yaml")]
    = ["default", "no_refine"],  # noqa: B006
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    preset: Annotated[str, typer.Option(help="auto (quality on CUDA, else fast) | fast | quality | smoke")] = "auto",
    objects: Annotated[list[str], typer.Option("--object", help="only these object folders (repeatable)")]
    = [],  # noqa: B006
    set_: Annotated[list[str], typer.Option("--set", help="STAGE.FIELD=VALUE configuration override (repeatable)")]
    = [],  # noqa: B006
    lpips: Annotated[bool, typer.Option(help="LPIPS too (needs torchvision's VGG16 weights locally)")] = False,
    report: Annotated[Path | None, typer.Option(help="also write the tables here (Markdown) and the rows as JSON "
                                                      "beside it, e.g. research/results/bench.md")] = None,
) -> None:
    """Run variants of the pipeline on ground-truth objects (view 0 as the photo) and score the 16 views."""
    from glimpse3d_assets.partitions import images_partitions
    from glimpse3d_assets.resources import MlflowTracker

    try:
        found = find_objects(gt_root)
    except FileNotFoundError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    missing = sorted(set(objects) - found.keys())
    if missing:
        raise typer.BadParameter(f"no object folder {', '.join(missing)} under {gt_root}")
    found = {k: v for k, v in found.items() if not objects or k in objects}
    settings = _settings(resolve_preset(preset, device), device, "syncdreamer16", None, None, None,
                         parse_assignments(set_))
    for name in variants:
        settings.variant_config(name)  # an unknown variant is an error before any work
    ws = Workspace(out.resolve())
    inputs = ws.state / "bench_inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    photos = {}
    for name, folder in found.items():
        photos[name] = inputs / f"{name}.png"
        shutil.copyfile(folder / view_filename(0), photos[name])
    keys = assign_keys([str(p) for p in photos.values()])
    runner = Runner(ws, settings)
    runner.instance.add_dynamic_partitions(images_partitions.name, sorted(keys.values()))
    experiment = MlflowTracker(tracking_uri=ws.mlflow_uri).experiment
    rows, failed = [], {}
    for name, folder in found.items():
        key = keys[str(photos[name])]
        gt = load_ground_truth(folder)
        error = runner.image_stages(key, uri=str(photos[name]))
        for variant in variants if error is None else []:
            error = runner.variant_stages(key, variant)
            if error is not None:
                error = f"variant {variant}: {error}"
                break
            target = ws.out / key / variant
            runner.deliver(key, variant, target)
            scores = score_gaussians(read_exported(target / "model.ply"), gt, with_lpips=lpips)
            run_id = log_scores(ws.mlflow_uri, experiment, key, variant, scores)
            row = {"object": name, "image": key, "variant": variant, "mlflow_run_id": run_id,
                   "scores": json_safe(scores),
                   "refine": json.loads((target / "metrics.json").read_text()).get("refine", {})}
            rows.append(row)
            typer.echo(json.dumps(row))
        if error is not None:
            failed[name] = error
            typer.echo(f"  FAILED {name}: {error}", err=True)
    atomic_write_bytes(ws.out / "bench.json", json.dumps({"settings": settings.model_dump(mode="json"),
                                                          "rows": rows, "failed": failed}, indent=1).encode())
    if rows:
        typer.echo(variant_table(rows), err=True)
    if report and rows:
        config = settings.image_config()
        write_report(report, rows, f"# glimpse3d bench {gt_root.name}\n\nPreset `{config.preset}`, device "
                     f"`{config.context().device}`, input camera syncdreamer16 (view 0 of the protocol rig); PSNR "
                     "(dB) / SSIM on white, silhouette IoU at alpha 0.5; novel = mean of views 1-15. Overrides: "
                     f"`{json.dumps(settings.overrides)}`.")
    if failed:
        raise typer.Exit(code=1)
