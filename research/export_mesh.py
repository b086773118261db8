"""How close the export stage's TSDF mesh comes to the surface the Gaussians were made from, and what it costs.

For each shared mesh (spot_cow, avocado, waterbottle; normalised to extent 1 and centred, as the protocol's
objects are): Gaussians are sampled on it exactly as the pipeline initialises them (``gaussians_from_mesh`` at the
``--preset``'s count), the export stage's mesh is extracted from their renders (``extract_mesh`` with the preset's
ExportConfig), and compared with the source mesh: faces, surface area (ratio to the source's), accuracy (mean
distance from the extracted surface to the source's) and completeness (the other way), both over 200k area-weighted
surface samples (:func:`glimpse3d_core.metrics.chamfer_fscore`), in thousandths of the extent; and the extraction's
wall seconds (renders included). The export's simplification, texture and mesh files scale with the face count.

    python research/export_mesh.py [--preset quality] [--set export.mesh_min_seen_fraction=0.2] [--threads 2]

Prints one JSON line per mesh.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import trimesh

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval_quality import GT_UP, MESHES, SHARED

from glimpse3d_core.config import PipelineConfig, parse_assignments
from glimpse3d_core.groundtruth import normalize_mesh
from glimpse3d_core.io.mesh import load_textured_mesh
from glimpse3d_core.metrics import chamfer_fscore
from glimpse3d_core.stages import gaussians_from_mesh
from glimpse3d_core.stages.export import extract_mesh
from glimpse3d_core.types import MeshAsset

SAMPLES = 200_000


def surface_points(mesh: trimesh.Trimesh) -> np.ndarray:
    return trimesh.sample.sample_surface(mesh, SAMPLES, seed=0)[0]


def measure(name: str, config: PipelineConfig, device: str) -> dict:
    source, _ = normalize_mesh(load_textured_mesh(SHARED / MESHES[name], up=GT_UP)).geometry()
    grey = np.full((len(source.vertices), 3), 0.6)
    gaussians = gaussians_from_mesh.run(MeshAsset(source.vertices, source.faces, grey), config.gaussians).to(device)
    start = time.perf_counter()
    extracted = extract_mesh(gaussians, config.export)
    seconds = time.perf_counter() - start
    result = trimesh.Trimesh(extracted.vertices, extracted.faces, process=False)
    scores = chamfer_fscore(surface_points(result), surface_points(source))
    return {"mesh": name, "faces": len(result.faces), "area_ratio": round(result.area / source.area, 3),
            "accuracy_mean": round(1000 * scores.accuracy, 2),
            "completeness_mean": round(1000 * scores.completeness, 2), "seconds": round(seconds, 2),
            "preset": config.preset, "mesh_resolution": config.export.mesh_resolution,
            "min_seen_fraction": config.export.mesh_min_seen_fraction, "device": device}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="quality", choices=["fast", "quality"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="FIELD.PATH=VALUE")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = PipelineConfig.from_preset(args.preset).with_overrides(parse_assignments(args.overrides))
    for name in MESHES:
        print(json.dumps(measure(name, config, args.device)), flush=True)


if __name__ == "__main__":
    main()
