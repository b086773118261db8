"""TripoSR at full size on a GPU with random weights: strict checkpoint round trip, then time and peak memory of
one image -> mesh (forward + marching cubes at 256 + vertex colours + world frame).

Usage (on the device): ``python3 research/gpu_triposr.py [--out DIR]``; ``--tiny`` is a CPU dry run of the
same script with the tiny config.
Random weights give no density above 25, so the iso-level is set once to the density's 97th percentile on the
first run (reported); that surface is noise, with far more faces than an object's. The mesh stage is therefore
also timed on the analytic ellipsoid field (:mod:`glimpse3d_core.models.triposr.synthetic`) through the
full-size decoder and plane shapes: a smooth object-like surface at threshold 25.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_models import save_triposr

from glimpse3d_core.cameras import intrinsics, look_at, orbit_position
from glimpse3d_core.models.triposr import (
    TripoSRConfig,
    TripoSRReconstructConfig,
    TripoSRReconstructor,
    load_triposr,
)
from glimpse3d_core.models.triposr.mesh import DENSITY_THRESHOLD, density_grid, extract_mesh
from glimpse3d_core.models.triposr.preprocess import framing, preprocess
from glimpse3d_core.models.triposr.reconstructor import to_world
from glimpse3d_core.models.triposr.renderer import TriplaneField
from glimpse3d_core.models.triposr.synthetic import ellipsoid_field
from glimpse3d_core.types import Camera, DepthMap, ObjectImage

IMAGE = Path(__file__).resolve().parents[1] / "examples" / "images" / "chair.png"
RESOLUTION = 256
REPEATS = 5
INSIDE_QUANTILE = 0.97
ELLIPSOID = (0.45, 0.3, 0.6)


def sync() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def iso_level(backend: TripoSRReconstructor, image: ObjectImage) -> tuple[float, int]:
    """(iso-level, voxels above the released threshold) of ``image``'s density on the backend's grid: the released
    threshold (25) where the density reaches it, else (random weights) its :data:`INSIDE_QUANTILE`."""
    density = density_grid(backend.field, backend.model.decoder, backend.scene_code(image),
                           backend.config.mc_resolution)
    above = int((density > DENSITY_THRESHOLD).sum())
    if above:
        return DENSITY_THRESHOLD, above
    return float(torch.quantile(density.flatten()[::7].float(), INSIDE_QUANTILE)), above


def timed_run(backend: TripoSRReconstructor, image: ObjectImage, camera: Camera) -> dict[str, float]:
    """One image -> world-frame mesh, with the stage times (seconds)."""
    t0 = sync()
    pixels = preprocess(image, backend.model.config.cond_image_size, backend.config.preprocess)
    weight = backend.model.image_tokenizer.model.embeddings.patch_embeddings.projection.weight
    planes = backend.model(pixels[None].to(weight.device, weight.dtype))[0]
    t1 = sync()
    mesh = extract_mesh(backend.field, backend.model.decoder, planes, backend.config.mc_resolution,
                        backend.config.density_threshold)
    t2 = sync()
    world = to_world(mesh, camera, framing(image.alpha, backend.config.preprocess.foreground_ratio).window)
    t3 = sync()
    return {"forward_s": t1 - t0, "mesh_s": t2 - t1, "frame_s": t3 - t2, "total_s": t3 - t0,
            "vertices": len(world.vertices), "faces": len(world.faces)}


def time_analytic_mesh(config: TripoSRConfig, resolution: int, device: torch.device, camera: Camera) -> dict:
    """Median time of mesh extraction (+ world frame) on the analytic ellipsoid at the real decoder's size."""
    decoder, planes = ellipsoid_field(config, ELLIPSOID)
    decoder, planes = decoder.to(device), planes.to(device)
    field = TriplaneField(config.renderer)
    extract_mesh(field, decoder, planes, resolution)  # warm-up
    times, faces = [], 0
    for _ in range(REPEATS):
        t0 = sync()
        mesh = to_world(extract_mesh(field, decoder, planes, resolution), camera,
                        (camera.width / 2, camera.height / 2, float(camera.width)))
        times.append(sync() - t0)
        faces = len(mesh.faces)
    return {"mesh_s_median": float(np.median(times)), "faces": faces, "semi_axes": ELLIPSOID}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("research/results"))
    parser.add_argument("--tiny", action="store_true", help="CPU dry run with the tiny config")
    args = parser.parse_args()
    config = TripoSRConfig.tiny() if args.tiny else TripoSRConfig()
    resolution = 32 if args.tiny else RESOLUTION
    device = torch.device("cpu" if args.tiny else "cuda")
    cuda = device.type == "cuda"
    results: dict[str, object] = {"device": torch.cuda.get_device_name(0) if cuda else "cpu",
                                  "torch": torch.__version__, "resolution": resolution}

    rgba = np.asarray(Image.open(IMAGE).convert("RGBA"), dtype=np.float32) / 255.0
    image = ObjectImage(rgba[..., :3], rgba[..., 3], IMAGE.stem)
    camera = Camera(look_at(orbit_position(0.0, 0.0, 2.0)), intrinsics(560.0, 512, 512), 512, 512)

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        state = save_triposr(Path(tmp), config, device)
        results["checkpoint"] = {"tensors": len(state), "values": sum(v.numel() for v in state.values()),
                                 "bytes": (Path(tmp) / "model.ckpt").stat().st_size,
                                 "build_and_save_s": time.perf_counter() - t}
        for dtype in (torch.float16, torch.float32) if cuda else (torch.float32,):
            t = time.perf_counter()
            model = load_triposr(tmp, device, dtype)
            load_s = sync() - t
            same = all(torch.equal(v.cpu().float(), state[k].to(v.dtype).float())
                       for k, v in model.checkpoint_state_dict().items())
            probe = TripoSRReconstructor(model, TripoSRReconstructConfig(mc_resolution=resolution))
            pixels = preprocess(image, model.config.cond_image_size)[None].to(device, dtype)
            level, above_25 = iso_level(probe, image)
            backend = TripoSRReconstructor(
                model, TripoSRReconstructConfig(mc_resolution=resolution, density_threshold=level)
            )
            backend.reconstruct(image, DepthMap(np.zeros(image.size), np.zeros(image.size, bool)), camera)  # warm-up
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            runs = [timed_run(backend, image, camera) for _ in range(REPEATS)]
            planes = model(pixels)[0]
            grid_times = []
            for _ in range(REPEATS):
                t = sync()
                density_grid(backend.field, model.decoder, planes, resolution)
                grid_times.append(sync() - t)
            label = str(dtype).removeprefix("torch.")
            results[label] = {
                "strict_load_s": load_s,
                "weights_equal_after_load": same,
                "voxels_above_25": above_25,
                "iso_level": level,
                "median": {k: float(np.median([r[k] for r in runs])) for k in runs[0]},
                "density_grid_s_median": float(np.median(grid_times)),
                "runs": runs,
                "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
                "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if cuda else None,
            }
            summary = results[label]
            print(label, json.dumps(summary["median"]), "peak GiB", summary["peak_allocated_gib"], flush=True)
            del model, probe, backend
            if cuda:
                torch.cuda.empty_cache()
    results["analytic_mesh"] = time_analytic_mesh(config, resolution, device, camera)
    print("analytic mesh", json.dumps(results["analytic_mesh"]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "triposr_gpu.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
