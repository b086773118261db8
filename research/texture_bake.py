"""Texture bake of mesh.glb: its fidelity to the splat and its cost, and the sizes of the splat formats.

For each splat (the shared Mip-Splatting donut and SuperSplat fruit drops, centred and scaled to extent 1 as the
pipeline's objects are, plus any ``model.ply`` given with ``--ply``, read back into our world with its
metrics.json ``splat_up``), at the default ExportConfig:

* the TSDF mesh is extracted and its texture baked exactly as the export stage does (renders of the fusion rig
  and of the 16 SyncDreamer rig views at 256 px);
* mesh.glb (textured) and mesh_vertexcolor.glb are written, read back through trimesh (+Y up -> our world) and
  ray-cast at the 16 rig views; PSNR (composited on white, whole 256² image) against the splat's own renders;
* the bake (simplify + xatlas + texel fusion + PNG/GLB write) is timed: wall seconds and process CPU seconds
  (the wall time on a shared machine is inflated by other load; CPU time is not), once per xatlas chart
  optimisation setting of ``--chart-iterations`` (default 1, xatlas's own default, and 0, the export's) and per
  colour-fusion device (the CPU, and CUDA where present, as the export stage fuses on a GPU run), side by side on
  the same mesh;
* the splat files' sizes (ply, splat, spz, compressed ply) are printed.

    python research/texture_bake.py [--ply out/NAME/model.ply ...] [--threads 2] [--chart-iterations 1 0] \
        [--set export.FIELD=VALUE ...]

Prints one JSON line per splat, chart setting and fusion device.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from glimpse3d_core import metrics
from glimpse3d_core.cameras import syncdreamer16_rig
from glimpse3d_core.config import PipelineConfig, parse_assignments
from glimpse3d_core.groundtruth import render_mesh_views
from glimpse3d_core.io.mesh import export_glb, export_textured_glb, load_textured_mesh
from glimpse3d_core.io.ply import read_ply
from glimpse3d_core.orientation import read_exported
from glimpse3d_core.stages.export import ExportConfig, extract_mesh, fusion_rig, render_batched, write_splat_files
from glimpse3d_core.texture import bake_texture
from glimpse3d_core.types import Gaussians

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "splats"
SPLATS = {"donut": SHARED / "gshairlod_donut_mipsplatting/fused.ply",
          "fruit": SHARED / "supersplat_fruit_drops/fruit_drops_minimal.ply"}


def unit(gaussians: Gaussians) -> Gaussians:
    """Centred (median) and scaled to extent 1 (2nd-98th percentile box), as the test viewer does."""
    centre = gaussians.means.median(0).values
    extent = float((gaussians.means.quantile(0.98, 0) - gaussians.means.quantile(0.02, 0)).max())
    gaussians.means = (gaussians.means - centre) / extent
    gaussians.log_scales = gaussians.log_scales - float(np.log(extent))
    return gaussians


def measure(name: str, gaussians: Gaussians, config: ExportConfig, chart_iterations: list[int],
            devices: list[str], fidelity: bool) -> list[dict]:
    rig = syncdreamer16_rig(256)
    fused = render_batched(gaussians, fusion_rig(config))
    mesh = extract_mesh(gaussians, config, fused)
    target = render_batched(gaussians, rig)
    return [bake(name, gaussians, config.model_copy(update={"texture_chart_iterations": n}), rig, mesh, fused, target,
                 device, fidelity) for n in chart_iterations for device in devices]


def bake(name: str, gaussians: Gaussians, config: ExportConfig, rig, mesh, fused, target, device: str,
         fidelity: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        wall, cpu = time.perf_counter(), time.process_time()
        textured = bake_texture(mesh, [fused, target], config.texture_size,
                                depth_tolerance=config.texture_depth_tolerance, max_faces=config.texture_max_faces,
                                chart_iterations=config.texture_chart_iterations, device=device)
        export_textured_glb(out / "mesh.glb", textured)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        export_glb(out / "mesh_vertexcolor.glb", mesh)
        splat = target.composite(1.0)
        psnr = {"textured": float("nan"), "vertexcolor": float("nan")}
        for key, file in (("textured", "mesh.glb"), ("vertexcolor", "mesh_vertexcolor.glb")) if fidelity else ():
            views = render_mesh_views(load_textured_mesh(out / file, up="y"), rig)
            psnr[key] = float(np.mean([metrics.psnr(v, s) for v, s in zip(views.composite(1.0), splat, strict=True)]))
        sizes = {fmt: p.stat().st_size for fmt, p in write_splat_files(
            gaussians, out, config.model_copy(update={"formats": ("splat", "spz", "ply_compressed")})).items()}
        sizes["glb"] = (out / "mesh.glb").stat().st_size
        sizes["glb_vertexcolor"] = (out / "mesh_vertexcolor.glb").stat().st_size
    return {"splat": name, "gaussians": len(gaussians), "mesh_faces": len(mesh.faces),
            "textured_faces": len(textured.faces), "texture": config.texture_size,
            "chart_iterations": config.texture_chart_iterations, "fusion_device": device,
            "psnr_textured_db": round(psnr["textured"], 2), "psnr_vertexcolor_db": round(psnr["vertexcolor"], 2),
            "bake_wall_s": round(wall, 2), "bake_cpu_s": round(cpu, 2), "bytes": sizes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ply", type=Path, nargs="*", default=[], help="pipeline model.ply files to add")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chart-iterations", type=int, nargs="+", default=[1, 0])
    parser.add_argument("--timing-only", action="store_true", help="skip the ray-cast PSNR (slow without embreex)")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="export.FIELD=VALUE",
                        help="export settings other than the defaults")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = PipelineConfig().with_overrides(parse_assignments(args.overrides)).export
    devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    splats = {name: unit(read_ply(path)) for name, path in SPLATS.items()}
    splats.update({p.parent.name: read_exported(p) for p in args.ply})
    for name, gaussians in splats.items():  # rendered on the GPU where there is one, as the export stage does
        for row in measure(name, gaussians.to(devices[-1]), config, args.chart_iterations, devices,
                           not args.timing_only):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
