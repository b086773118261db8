"""Ablation table from MLflow: one row per variant, the mean (over images) of each quality metric and timing.

    python3 research/compare.py --tracking-uri sqlite:///OUT/.glimpse3d/mlflow.db [--out ablations.md]
        [--experiment glimpse3d] [--metrics input_psnr silhouette_iou ...] [--per-image] [--rank-by gt.novel_psnr]

Reads the runs `quality_metrics` logged (one per image x variant; the latest per pair counts), prints the table
and writes it as Markdown. The number of images per variant is shown: compare variants over the same images.
Rows are ranked by ``--rank-by`` (default ``gt.novel_psnr``: the novel-view PSNR against ground truth that
``glimpse3d bench`` adds to the runs; without ground truth the table keeps variant order).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import mlflow
import pandas as pd

DEFAULT_METRICS = ["gt.novel_psnr", "gt.input_psnr", "gt.novel_ssim", "gt.novel_iou", "gt.chamfer",
                   "input_psnr", "input_ssim", "silhouette_iou", "depth_variance", "refine.depth_consistency_r2",
                   "refine.accepted", "num_gaussians", "timings.optimize", "timings.refine", "timings.export"]
RANK_BY = "gt.novel_psnr"


def load_runs(tracking_uri: str, experiment: str) -> pd.DataFrame:
    """Finished runs, latest per (image, variant), with columns image, variant and metrics.* ."""
    mlflow.set_tracking_uri(tracking_uri)
    runs = mlflow.search_runs(experiment_names=[experiment],
                              filter_string="attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"])
    if runs.empty:
        raise SystemExit(f"no finished runs in experiment {experiment!r} at {tracking_uri}")
    runs = runs.rename(columns={"tags.image": "image", "tags.variant": "variant"})
    return runs.drop_duplicates(subset=["image", "variant"], keep="first")


def ablation_table(runs: pd.DataFrame, metrics: list[str], per_image: bool = False,
                   rank_by: str = RANK_BY) -> pd.DataFrame:
    columns = [m for m in metrics if f"metrics.{m}" in runs.columns]
    data = runs[["image", "variant", *(f"metrics.{m}" for m in columns)]]
    data = data.rename(columns={f"metrics.{m}": m for m in columns})
    if per_image:
        return data.sort_values(["image", "variant"]).set_index(["image", "variant"])
    table = data.groupby("variant")[columns].mean()
    table.insert(0, "images", data.groupby("variant")["image"].nunique())
    return table.sort_values(rank_by, ascending=False) if rank_by in table.columns else table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--experiment", default="glimpse3d")
    parser.add_argument("--metrics", nargs="+", default=DEFAULT_METRICS)
    parser.add_argument("--per-image", action="store_true", help="one row per (image, variant) instead of means")
    parser.add_argument("--out", type=Path, help="write the table as Markdown here")
    parser.add_argument("--rank-by", default=RANK_BY, help="metric the variants are ranked by (highest first)")
    args = parser.parse_args()
    table = ablation_table(load_runs(args.tracking_uri, args.experiment), args.metrics, args.per_image, args.rank_by)
    markdown = table.to_markdown(floatfmt=".4g")
    print(markdown)
    if args.out:
        args.out.write_text(markdown + "\n")


if __name__ == "__main__":
    main()
