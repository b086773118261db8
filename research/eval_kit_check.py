"""Check the evaluation kit against SyncDreamer's own chicken example and print the numbers.

    python research/eval_kit_check.py [--shared ../shared/data]

Prints: protocol PSNR/SSIM of chicken-pr vs chicken-gt (SSIM with the border crop of torchmetrics < 1.5 and the
full map of torchmetrics >= 1.5; compared with torchmetrics itself when it is importable), the ground-truth render
of the GSO mesh against chicken-gt (silhouette IoU, depth MAE, time) for each candidate z-turn, and the depth
variance of the ground-truth depth maps.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from glimpse3d_core.groundtruth import GroundTruthConfig, read_protocol_views, render_ground_truth, write_protocol_views
from glimpse3d_core.metrics import depth_variance, novel_view_scores_for, silhouette_iou, ssim

CHICKEN = "syncdreamer_eval/syncdreamer_gso_chicken"


def torchmetrics_ssim(pred: np.ndarray, gt: np.ndarray) -> float | None:
    try:
        import torch
        from torchmetrics.functional import structural_similarity_index_measure
    except ImportError:
        return None
    to = lambda x: torch.from_numpy(x.astype(np.float64)).permute(2, 0, 1)[None]  # noqa: E731
    return float(structural_similarity_index_measure(to(pred), to(gt)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    root = parser.parse_args().shared / CHICKEN
    gt, pr = read_protocol_views(root / "chicken-gt"), read_protocol_views(root / "chicken-pr")

    summary = novel_view_scores_for(pr, gt).summary
    print("chicken-pr vs chicken-gt:", {k: None if v is None else round(v, 4) for k, v in summary.items()})
    p, g = pr.composite(), gt.composite()
    full = [ssim(p[i], g[i], crop_border=False) for i in range(len(p))]
    print(f"SSIM full map (torchmetrics >= 1.5 recipe): {np.mean(full):.4f}")
    reference = [torchmetrics_ssim(p[i], g[i]) for i in range(len(p))]
    if reference[0] is not None:
        diff = np.abs(np.subtract(full, reference)).max()
        print(f"  torchmetrics installed: {np.mean(reference):.4f}, max |diff| {diff:.2e}")

    mesh = root / "chicken-mesh/meshes/model.obj"
    for turn in (0.0, 90.0, 180.0, 270.0):
        start = time.perf_counter()
        views = render_ground_truth(mesh, GroundTruthConfig(rotate_z_deg=turn))
        seconds = time.perf_counter() - start
        with tempfile.TemporaryDirectory() as folder:  # through the protocol's PNG encoding
            write_protocol_views(folder, views)
            ours = read_protocol_views(folder)
        both = (ours.depth > 0) & (gt.depth > 0)
        mae = float(np.abs(ours.depth - gt.depth)[both].mean())
        print(f"render-gt --rotate-z {turn:5.1f}: IoU {silhouette_iou(ours.alpha, gt.alpha):.5f}, "
              f"depth MAE {mae:.6f}, {seconds:.2f} s for 16 views at 256²")

    print("depth variance of chicken-gt:", depth_variance(gt))


if __name__ == "__main__":
    main()
