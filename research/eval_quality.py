"""Quality of the weight-free pipeline on ground truth, by the SyncDreamer protocol.

For each shared mesh (spot_cow, avocado, waterbottle): render the protocol's 16 views (glimpse3d_core.groundtruth;
cached as protocol PNGs under --gt-cache), run the whole pipeline on view 0 alone with the known ``syncdreamer16``
input camera, render the result from the 16 protocol cameras and score every view (PSNR/SSIM on white, silhouette
IoU at alpha 0.5): the input view, the mean of the 15 novel views and the 16-view mean. Baselines, scored the same
way: the initial Gaussians before optimisation (the front half's output), and the input photo copied as every view.

Prints a table and writes it to --report (markdown) and a JSON beside it.

    python3 research/eval_quality.py [--preset fast|quality] [--set optimize.iterations=300 ...] [--device cpu]
        [--objects spot_cow avocado] [--report research/results/quality.md]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from glimpse3d_core.benchmark import copy_baseline, render_like, score_views
from glimpse3d_core.config import PipelineConfig, parse_assignments
from glimpse3d_core.groundtruth import GroundTruthConfig, read_protocol_views, render_ground_truth, write_protocol_views
from glimpse3d_core.io.images import save_png
from glimpse3d_core.metrics import json_safe
from glimpse3d_core.pipeline import run_pipeline
from glimpse3d_core.types import ViewSet

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
MESHES = {
    "spot_cow": "meshes/spot_cow/cow.obj",
    "avocado": "meshes/avocado/glTF/Avocado.gltf",
    "waterbottle": "meshes/waterbottle/glTF/WaterBottle.gltf",
}
GT_UP = "y"
"""Up axis of the shared mesh files (as research/front_preview.py renders them)."""


def ground_truth(name: str, cache: Path, shared: Path) -> ViewSet:
    """The 16 protocol views of mesh ``name``, rendered once and cached as protocol PNGs."""
    folder = cache / name
    try:
        return read_protocol_views(folder)
    except FileNotFoundError:
        views = render_ground_truth(shared / MESHES[name], GroundTruthConfig(up=GT_UP))
        write_protocol_views(folder, views)
        return read_protocol_views(folder)


def score(pred: ViewSet, gt: ViewSet) -> dict:
    """PSNR/SSIM (input, novel mean, 16-view mean), silhouette IoU and Chamfer/F-score of ``pred`` against ``gt``."""
    return score_views(pred, gt, with_lpips=False)


def evaluate(name: str, gt: ViewSet, config: PipelineConfig, work: Path) -> dict:
    photo = save_png(work / f"{name}.png", gt.rgb[0], gt.alpha[0])
    start = time.perf_counter()
    result = run_pipeline(photo, work / "out", config)
    seconds = time.perf_counter() - start
    final, initial = render_like(result.gaussians, gt), render_like(result.initial_gaussians, gt)
    save_png(work / f"{name}_sheet.png", np.concatenate([
        np.concatenate(list(v.composite(1.0)[::2]), 1) for v in (gt, initial, final)], 0))
    return {
        "pipeline": score(final, gt), "initial": score(initial, gt), "copy": score(copy_baseline(gt), gt),
        "seconds": seconds, "timings": result.timings, "num_gaussians": len(result.gaussians),
        "refine": result.refine.counts,
    }


def _num(value: float | str, digits: int) -> str:
    """A table cell: the number rounded, or as it is when JSON spelled it as a string ("inf")."""
    return value if isinstance(value, str) else f"{value:.{digits}f}"


def table(results: dict, config: PipelineConfig, device: str) -> str:
    lines = [
        f"Preset `{config.preset}`, device `{device}`, input camera syncdreamer16 (view 0 of the protocol rig). "
        "PSNR (dB) / SSIM on white, silhouette IoU at alpha 0.5; novel = mean of views 1-15, all16 = 16-view mean.",
        "",
        "| object | method | input PSNR | novel PSNR | all16 PSNR | input SSIM | novel SSIM | novel IoU | s/image |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in results.items():
        for method in ("pipeline", "initial", "copy"):
            s = r[method]
            secs = f"{r['seconds']:.1f}" if method == "pipeline" else ""
            cells = [_num(s[k], 2) for k in ("input_psnr", "novel_psnr", "psnr")]
            cells += [_num(s[k], 3) for k in ("input_ssim", "novel_ssim", "novel_iou")]
            lines.append(f"| {name} | {method} | {' | '.join(cells)} | {secs} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], help="dotted.key=value overrides")
    parser.add_argument("--objects", nargs="*", default=list(MESHES))
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("--gt-cache", type=Path, default=REPO / "research" / "results" / "tmp" / "gt")
    parser.add_argument("--work", type=Path, default=REPO / "research" / "results" / "tmp" / "eval")
    parser.add_argument("--report", type=Path, default=REPO / "research" / "results" / "quality.md")
    args = parser.parse_args()
    config = PipelineConfig.from_dict({"preset": args.preset, "device": args.device,
                                       "input_camera": "syncdreamer16", **parse_assignments(args.overrides)})
    results = {}
    for name in args.objects:
        gt = ground_truth(name, args.gt_cache, args.shared)
        results[name] = evaluate(name, gt, config, args.work)
        p, c = results[name]["pipeline"], results[name]["copy"]
        print(f"{name}: input {p['input_psnr']:.2f} novel {p['novel_psnr']:.2f} (copy {c['novel_psnr']:.2f}) "
              f"all16 {p['psnr']:.2f} {results[name]['seconds']:.1f}s", flush=True)
        write_report(args.report, results, config)  # after every object, so a long run leaves partial results
    print(table(results, config, str(config.context().device)))


def write_report(path: Path, results: dict, config: PipelineConfig) -> None:
    """quality.md (the table) and quality.json (every number plus the flat config) at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = table(results, config, str(config.context().device))
    path.write_text(f"# Quality on ground truth (research/eval_quality.py)\n\n{text}")
    payload = {"config": config.flat_params(), "results": results}
    path.with_suffix(".json").write_text(json.dumps(json_safe(payload), indent=2, default=float))


if __name__ == "__main__":
    main()
