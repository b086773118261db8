"""Front half of the weight-free pipeline on ground truth: segment -> depth -> reconstruct -> Gaussians.

For each shared mesh: render the SyncDreamer protocol's 16 views (glimpse3d_core.groundtruth; the chicken's come
ready-made from SyncDreamer), run the front
stages on view 0 alone with the known ``syncdreamer16`` input camera, ray-cast the coarse mesh (vertex colours)
into all 16 views and score it (PSNR on white, silhouette IoU) next to the copy baseline (view 0 as every view);
with ``--gaussians`` also splat the initial Gaussians (glimpse3d_core.render) into the 16 views and score them.
Optionally run on photos (``--photos``) with the canonical camera. Saves contact sheets (GT row, mesh row,
depth) under ``--out`` for inspection.

    python3 research/front_preview.py --out /tmp/front_preview [--gaussians] [--photos a.png b.png]
        [--thickness-scale 1.0]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import trimesh

from glimpse3d_core.cameras import syncdreamer16_rig
from glimpse3d_core.groundtruth import GroundTruthConfig, read_protocol_views, render_ground_truth, render_mesh_views
from glimpse3d_core.input_camera import CANONICAL, SYNCDREAMER16_VIEW0
from glimpse3d_core.io.images import load_image, save_png
from glimpse3d_core.io.mesh import TexturedMesh, to_trimesh
from glimpse3d_core.metrics import composite_white, psnr, silhouette_iou
from glimpse3d_core.render import render_views
from glimpse3d_core.stages import depth, gaussians_from_mesh, reconstruct, segment

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MESHES = {
    "spot_cow": "meshes/spot_cow/cow.obj",
    "avocado": "meshes/avocado/glTF/Avocado.gltf",
    "waterbottle": "meshes/waterbottle/glTF/WaterBottle.gltf",
    "chicken": "syncdreamer_eval/syncdreamer_gso_chicken/chicken-gt",  # SyncDreamer's own GT renders
}


def front(rgb: np.ndarray, alpha: np.ndarray | None, spec, rec_cfg: reconstruct.ReconstructConfig, name: str):
    """Run the four front stages; returns their outputs and per-stage seconds."""
    times = {}
    t = time.perf_counter()
    seg = segment.run(rgb, alpha, segment.SegmentConfig(), spec, name)
    times["segment"] = time.perf_counter() - t
    t = time.perf_counter()
    dep = depth.run(seg.image)
    times["depth"] = time.perf_counter() - t
    t = time.perf_counter()
    mesh = reconstruct.run(seg.image, dep, seg.camera, rec_cfg)
    times["reconstruct"] = time.perf_counter() - t
    t = time.perf_counter()
    gauss = gaussians_from_mesh.run(mesh)
    times["gaussians"] = time.perf_counter() - t
    return seg, dep, mesh, gauss, times


def sheet(rows: list[np.ndarray]) -> np.ndarray:
    """Stack rows of [C,H,W,3] images into one [rows*H, C*W, 3] sheet."""
    return np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)


def evaluate_mesh(name: str, rel: str, out: Path, rec_cfg: reconstruct.ReconstructConfig,
                  score_gaussians: bool = False) -> dict:
    path = SHARED / rel
    gt = read_protocol_views(path) if path.is_dir() else render_ground_truth(path, GroundTruthConfig(up="y"))
    gt_white = composite_white(gt.rgb, gt.alpha)
    _, _, mesh, gauss, times = front(gt.rgb[0], gt.alpha[0], SYNCDREAMER16_VIEW0, rec_cfg, name)
    pred = render_mesh_views(TexturedMesh([to_trimesh(mesh)]), syncdreamer16_rig(256))
    pred_white = composite_white(pred.rgb, pred.alpha)
    p = [psnr(pred_white[i], gt_white[i]) for i in range(16)]
    iou = [silhouette_iou(pred.alpha[i], gt.alpha[i]) for i in range(16)]
    copy = [psnr(gt_white[0], gt_white[i]) for i in range(1, 16)]
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces)
    result = {
        "input_psnr": p[0], "novel_psnr": float(np.mean(p[1:])), "mean16_psnr": float(np.mean(p)),
        "copy_novel_psnr": float(np.mean(copy)), "input_iou": iou[0], "novel_iou": float(np.mean(iou[1:])),
        "watertight": bool(tm.is_watertight), "extent": tm.extents.tolist(), "gaussians": len(gauss),
        "seconds": times,
    }
    rows = [gt_white[::2], pred_white[::2]]
    if score_gaussians:
        splats = render_views(gauss, syncdreamer16_rig(256), background=1.0)
        splat_white = composite_white(splats.rgb, splats.alpha)
        g = [psnr(splat_white[i], gt_white[i]) for i in range(16)]
        result.update(gaussians_input_psnr=g[0], gaussians_novel_psnr=float(np.mean(g[1:])),
                      gaussians_novel_iou=float(np.mean([silhouette_iou(splats.alpha[i], gt.alpha[i])
                                                         for i in range(1, 16)])))
        rows.append(splat_white[::2])
    save_png(out / f"{name}_views.png", sheet(rows))
    return result


def preview_photo(path: Path, out: Path, rec_cfg: reconstruct.ReconstructConfig) -> dict:
    rgb, alpha = load_image(path)
    seg, dep, mesh, _, times = front(rgb, alpha, CANONICAL, rec_cfg, path.stem)
    pred = render_mesh_views(TexturedMesh([to_trimesh(mesh)]), syncdreamer16_rig(256).subset(range(0, 16, 2)))
    depth_rgb = np.repeat(np.where(dep.valid, 1.0 - dep.depth, 0.0)[..., None], 3, -1)
    top = np.stack([seg.image.composite(1.0), depth_rgb] + [np.ones_like(depth_rgb)] * 6)
    save_png(out / f"{path.stem}_preview.png", sheet([top, composite_white(pred.rgb, pred.alpha)]))
    return {"alpha_source": seg.alpha_source, "seconds": times, "vertices": len(mesh.vertices)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/front_preview"))
    parser.add_argument("--photos", type=Path, nargs="*", default=[])
    parser.add_argument("--thickness-scale", type=float, default=reconstruct.CarvingSettings().thickness_scale)
    parser.add_argument("--cross-section", default=reconstruct.CarvingSettings().cross_section)
    parser.add_argument("--skip-meshes", action="store_true")
    parser.add_argument("--gaussians", action="store_true", help="also score the initial Gaussians (splatted)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rec_cfg = reconstruct.ReconstructConfig(backend=reconstruct.CarvingSettings(thickness_scale=args.thickness_scale,
                                                                             cross_section=args.cross_section))
    results = {}
    if not args.skip_meshes:
        for name, rel in MESHES.items():
            results[name] = evaluate_mesh(name, rel, args.out, rec_cfg, args.gaussians)
            r = results[name]
            print(f"{name:12s} input {r['input_psnr']:.2f} novel {r['novel_psnr']:.2f}"
                  f" (copy {r['copy_novel_psnr']:.2f})"
                  f" mean16 {r['mean16_psnr']:.2f} IoU in {r['input_iou']:.3f} novel {r['novel_iou']:.3f}"
                  f" watertight {r['watertight']} s {sum(r['seconds'].values()):.2f}", flush=True)
            if args.gaussians:
                print(f"{'':12s} gaussians input {r['gaussians_input_psnr']:.2f} novel {r['gaussians_novel_psnr']:.2f}"
                      f" IoU novel {r['gaussians_novel_iou']:.3f}", flush=True)
    for photo in args.photos:
        results[photo.stem] = preview_photo(photo, args.out, rec_cfg)
        print(photo.stem, results[photo.stem], flush=True)
    (args.out / "front_preview.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
