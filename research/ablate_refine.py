"""MVCRM ablation on ground truth, sharing everything before refine: what ``glimpse3d bench`` computes, cheaper.

The refine variants of glimpse3d_assets/ablations.yaml (``default``, ``no_refine``, ``no_depth_consistency``,
...) differ only in the refine stage, so everything before it (segment .. optimize, deterministic on CPU under
the seed) is computed once per object through the same chain as the graph, and each variant's refine runs on the
same optimised Gaussians; the result is scored as ``glimpse3d bench`` scores it
(:func:`glimpse3d_core.benchmark.score_gaussians`). Variants that differ before refine are refused. The bench
graph runs the earlier stages once per variant (more than an hour for the full table on the shared 2-core
machine); this script has not been cross-checked against it figure for figure.

    python3 research/ablate_refine.py GT_ROOT --object spot_cow [--object ...] [--variants default no_refine ...]
        [--preset fast] [--json OUT.json]
    python3 research/ablate_refine.py --merge A.json B.json ... --report research/results/mvcrm_ablation.md

Objects: folders of GT_ROOT with the protocol's 000.png .. 015.png (``glimpse3d eval render-gt`` writes them).
Rows are the bench's JSON lines (object, variant, scores, refine); ``--report`` writes the bench's tables.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from glimpse3d_assets.resources import PipelineSettings
from glimpse3d_cli.bench import write_report
from glimpse3d_core.benchmark import find_objects, load_ground_truth, score_gaussians
from glimpse3d_core.chain import Chain
from glimpse3d_core.groundtruth import view_filename
from glimpse3d_core.io.images import load_image
from glimpse3d_core.metrics import json_safe

VARIANTS = ["no_refine", "default", "no_depth_consistency", "no_normal_smoothing", "no_color_fusion", "refit_only",
            "refine_v1"]
SHARED = ("segment", "depth", "reconstruct", "gaussians", "multiview", "enhance", "optimize", "seed", "device")
"""Configuration every variant must share (all but refine and export)."""


def ablate(name: str, folder: Path, settings: PipelineSettings, variants: list[str]) -> list[dict]:
    configs = {v: settings.variant_config(v) for v in variants}
    first = configs[variants[0]]
    for v, cfg in configs.items():
        differ = [k for k in SHARED if getattr(cfg, k) != getattr(first, k)]
        if differ:
            raise SystemExit(f"variant {v} differs from {variants[0]} before refine ({', '.join(differ)})")
    gt = load_ground_truth(folder)
    start = time.perf_counter()
    rgb, alpha = load_image(folder / view_filename(0))
    chain = Chain.prepare(first)
    seg = chain.segment(rgb, alpha, name)
    initial = chain.gaussians(chain.reconstruct(seg.image, chain.depth(seg.image), seg.camera))
    views = chain.enhance(chain.multiview(initial, seg.image, seg.camera), seg.image)
    fitted = chain.optimize(initial, views)
    shared_seconds = time.perf_counter() - start
    rows = []
    for v, cfg in configs.items():
        start = time.perf_counter()
        result = Chain(cfg, chain.context, chain.selections).refine(fitted.gaussians, views)
        rows.append({"object": name, "variant": v, "scores": json_safe(score_gaussians(result.gaussians, gt)),
                     "refine": {**result.counts, **result.scores}, "refine_seconds": time.perf_counter() - start,
                     "shared_seconds": shared_seconds})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gt_root", type=Path, nargs="?")
    parser.add_argument("--object", dest="objects", action="append", default=[])
    parser.add_argument("--variants", nargs="+", default=VARIANTS)
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--merge", nargs="+", type=Path, default=[], help="row files of earlier runs to combine")
    parser.add_argument("--report", type=Path, help="Markdown report (+ .json beside it) of all rows")
    args = parser.parse_args()
    settings = PipelineSettings(preset=args.preset, device="cpu", input_camera="syncdreamer16")
    rows = [row for path in args.merge for row in json.loads(path.read_text())]
    if args.gt_root:
        found = find_objects(args.gt_root)
        for name in args.objects or list(found):
            rows += ablate(name, found[name], settings, args.variants)
            if args.json:
                args.json.write_text(json.dumps(rows, indent=1))
    if args.report:
        write_report(args.report, rows, f"# MVCRM ablation on ground truth (research/ablate_refine.py)\n\nPreset "
                     f"`{args.preset}`, CPU, input camera syncdreamer16 (view 0 of the protocol rig), everything "
                     "before refine shared by the variants; PSNR (dB) / SSIM on white, silhouette IoU at alpha 0.5, "
                     "Chamfer from both sides' depth (world units, object extent 1); novel = mean of views 1-15.")


if __name__ == "__main__":
    main()
