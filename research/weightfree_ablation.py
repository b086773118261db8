"""Ablation of the weight-free front half (issue 18): ground truth, a quick front-half screen, the report.

Three sub-commands:

* ``prepare``: render the SyncDreamer protocol's 16 views (glimpse3d_core.groundtruth) of the shared meshes and of
  openly licensed glTF sample models (a checkout of KhronosGroup's glTF-Sample-Assets, ``--assets``) into
  ``--out/<name>/``, link the chicken's ready-made views beside them and print the licence of each;
* ``screen``: the chain's segment -> depth -> reconstruct -> initial Gaussians (fast preset, CPU) on view 0 of
  every object under GT_ROOT with the carving overrides ``--set FIELD=VALUE`` and score the Gaussians on the 16
  views (what optimisation changes by < 0.1 dB on novel views; about 15 s an object on one core);
* ``report``: per-object novel-view PSNR of ``glimpse3d bench`` runs (``NAME=DIR``: the bench ``--out`` folders,
  the first the baseline) and of ``screen`` JSON files, deltas against each section's baseline, as Markdown.

    python3 research/weightfree_ablation.py prepare --assets glTF-Sample-Assets --out research/results/tmp/gt_wf
    python3 research/weightfree_ablation.py prepare --assets ... --out GT_R45 --turn 45 --objects fox spot_cow milktruck
    python3 research/weightfree_ablation.py screen GT_ROOT --set hidden_colour=mirror --json base.json
    python3 research/weightfree_ablation.py report --bench baseline=DIR contour=DIR --screen base.json ...
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from glimpse3d_core.benchmark import find_objects, load_ground_truth, score_gaussians
from glimpse3d_core.chain import Chain
from glimpse3d_core.config import PipelineConfig, parse_assignments
from glimpse3d_core.groundtruth import GroundTruthConfig, render_ground_truth, write_protocol_views

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ASSETS = "DRx3D/glTF-Sample-Assets-OLD@02d48689ce60 (KhronosGroup glTF-Sample-Assets; LICENSE.md beside each model)"
"""The checkout ``--assets`` names: the commit shared/data's Avocado and WaterBottle come from."""
MESHES = {  # name: (file, source, licence of the model files); all glTF/OBJ files here are +Y up
    "spot_cow": (SHARED / "meshes/spot_cow/cow.obj", "shared/data: Keenan Crane's Spot", "CC0-1.0"),
    "avocado": (SHARED / "meshes/avocado/glTF/Avocado.gltf", "shared/data: glTF-Sample-Assets Avocado", "CC0-1.0"),
    "waterbottle": (SHARED / "meshes/waterbottle/glTF/WaterBottle.gltf", "shared/data: glTF-Sample-Assets "
                    "WaterBottle", "CC0-1.0"),
    "fox": ("Models/Fox/glTF/Fox.gltf", "glTF-Sample-Assets Fox (low poly fox by PixelMannen; rig by tomkranis)",
            "CC0-1.0 (model files), CC-BY-4.0 (rigging)"),
    "chair": ("Models/SheenChair/glTF/SheenChair.gltf", "glTF-Sample-Assets SheenChair", "CC0-1.0"),
    "milktruck": ("Models/CesiumMilkTruck/glTF/CesiumMilkTruck.gltf", "glTF-Sample-Assets CesiumMilkTruck "
                  "(© 2017 Cesium)", "CC-BY-4.0 with trademark limitations"),
    "suzanne": ("Models/Suzanne/glTF/Suzanne.gltf", "glTF-Sample-Assets Suzanne (Blender's monkey)", "CC0-1.0"),
    "helmet": ("Models/DamagedHelmet/glTF/DamagedHelmet.gltf", "glTF-Sample-Assets DamagedHelmet (ctxwing, after "
               "theblueturtle_)", "CC-BY-4.0"),
}
METRICS = {"novel_psnr": "novel-view PSNR (dB)", "input_psnr": "input-view PSNR (dB)",
           "novel_iou": "novel-view silhouette IoU"}
"""Table titles of the scores ``report --metric`` names."""
CHICKEN = SHARED / "syncdreamer_eval/syncdreamer_gso_chicken/chicken-gt"
"""SyncDreamer's own ground-truth views of the GSO chicken (MIT, shared/data)."""


def prepare(assets: Path, out: Path, names: list[str], turn: float) -> None:
    """Render (or keep, when present) the protocol views of the meshes ``names`` (all of MESHES when empty), turned
    ``turn`` degrees about +Z (folder ``<name>_r<turn>`` when not 0); link the chicken's views when turn is 0."""
    for name in names or MESHES:
        path, source, licence = MESHES[name]
        folder = out / (f"{name}_r{turn:g}" if turn else name)
        if not (folder / "015.png").is_file():
            mesh = Path(path) if Path(path).is_absolute() else assets / path
            write_protocol_views(folder, render_ground_truth(mesh, GroundTruthConfig(up="y", rotate_z_deg=turn)))
        print(f"| {folder.name} | {source} | {licence} |")
    if turn:
        return
    print(f"glTF-Sample-Assets: {ASSETS}")
    if not (out / "chicken").exists():
        (out / "chicken").symlink_to(CHICKEN, target_is_directory=True)
    print("| chicken | shared/data (SyncDreamer's GSO chicken views) | MIT (renders), GSO CC-BY-4.0 (mesh) |")


def screen(gt_root: Path, assignments: list[str]) -> dict[str, dict[str, float]]:
    """{object: scores} of the initial Gaussians (fast preset, carving ``assignments``) on the protocol views."""
    overrides = {"reconstruct": {"backend": {"fallback": parse_assignments(assignments)}}} if assignments else {}
    chain = Chain.prepare(PipelineConfig.from_preset("fast").with_overrides(
        {**overrides, "device": "cpu", "input_camera": "syncdreamer16"}))
    rows = {}
    for name, folder in find_objects(gt_root).items():
        gt = load_ground_truth(folder)
        start = time.perf_counter()
        seg = chain.segment(gt.rgb[0], gt.alpha[0], name)
        scores = score_gaussians(chain.gaussians(chain.reconstruct(seg.image, chain.depth(seg.image), seg.camera)), gt)
        rows[name] = {**scores, "seconds": time.perf_counter() - start}
        print(f"{name:12s} novel {scores['novel_psnr']:.2f} dB  input {scores['input_psnr']:.2f} dB  "
              f"novel IoU {scores['novel_iou']:.3f}", flush=True)
    print(f"mean novel {np.mean([r['novel_psnr'] for r in rows.values()]):.2f} dB")
    return rows


def _section(title: str, runs: dict[str, dict[str, float]]) -> list[str]:
    """Markdown rows: novel PSNR per object and run, deltas against the first run, mean and worst delta."""
    names = list(runs)
    objects = sorted(set().union(*runs.values()))
    base = runs[names[0]]
    lines = [f"### {title}", "", "| run | " + " | ".join(objects) + " | mean | mean Δ | worst Δ |",
             "| --- |" + " ---: |" * (len(objects) + 3)]
    for name in names:
        values = [runs[name][o] for o in objects]
        deltas = [runs[name][o] - base[o] for o in objects]
        cells = [f"{v:.2f}" + (f" ({d:+.2f})" if name != names[0] else "")
                 for v, d in zip(values, deltas, strict=True)]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {np.mean(values):.2f} | {np.mean(deltas):+.2f} | "
                     f"{min(deltas):+.2f} |")
    return [*lines, ""]


def report(bench: list[str], screens: list[str], out: Path, metric: str = "novel_psnr") -> None:
    """Print the Markdown tables (``metric`` per object, deltas) and write every score to ``out`` (JSON), from
    bench folders and screen files named ``GROUP:NAME``; each group's first run is its baseline."""
    data: dict[str, dict] = {"bench": {}, "screen": {}}
    for item in bench:
        name, folder = item.split("=", 1)
        rows = json.loads((Path(folder) / "bench.json").read_text())["rows"]
        data["bench"][name] = {r["object"]: r["scores"] for r in rows}
    for item in screens:
        name, path = item.split("=", 1)
        data["screen"][name] = json.loads(Path(path).read_text())
    lines = []
    label = METRICS.get(metric, metric)
    for kind, title in (("bench", f"glimpse3d bench (whole pipeline), {label}"),
                        ("screen", f"front-half screen (initial Gaussians), {label}")):
        groups: dict[str, dict] = {}
        for name, rows in data[kind].items():
            group, _, label = name.partition(":")
            groups.setdefault(group, {})[label or group] = {o: s[metric] for o, s in rows.items()}
        for group, runs in groups.items():
            lines += _section(f"{title}: {group}", runs)
    out.write_text(json.dumps(data, indent=1))
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--assets", type=Path, required=True, help="glTF-Sample-Assets checkout (holds Models/)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--objects", nargs="*", default=[], choices=list(MESHES), help="only these (default: all)")
    p.add_argument("--turn", type=float, default=0.0, help="turn the meshes this many degrees about +Z")
    s = sub.add_parser("screen")
    s.add_argument("gt_root", type=Path)
    s.add_argument("--set", dest="assignments", action="append", default=[], help="carving FIELD=VALUE")
    s.add_argument("--json", type=Path, required=True)
    r = sub.add_parser("report")
    r.add_argument("--bench", nargs="*", default=[], help="GROUP:NAME=DIR (bench --out folders; first = baseline)")
    r.add_argument("--screen", nargs="*", default=[], help="GROUP:NAME=FILE (screen --json files)")
    r.add_argument("--json", type=Path, required=True, help="where every score goes (JSON)")
    r.add_argument("--metric", default="novel_psnr", help="score in the tables: " + ", ".join(METRICS))
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.assets, args.out, args.objects, args.turn)
    elif args.command == "screen":
        args.json.write_text(json.dumps(screen(args.gt_root, args.assignments), indent=1))
    else:
        report(args.bench, args.screen, args.json, args.metric)


if __name__ == "__main__":
    main()
