"""Can one photo tell the yaw of an object's vertical mirror plane? Two estimators tried for issue 18 (neither
reliable: research/results/weightfree_ablation.md), scored against the yaw each ground-truth folder was turned by.

* ``photo``: photo-consistency (stereo between the photo and its mirror image). For each candidate yaw ``psi`` the
  visible point ``x`` of every pixel (from view 0's **ground-truth** depth: the best case for this cue) is reflected
  in the plane; where the camera sees the reflection too (its depth agrees within 0.02 world units) and it lies
  more than 3 px away, the two pixels' colours are compared. Printed per yaw: mean absolute RGB difference
  (straight colour in [0, 1]) / number of pairs.
* ``feet``: gravity. The silhouette's feet (local lowest points of its bottom outline standing out by 3 % of its
  height) should rest on the ground; each candidate yaw's carving (resolution 64) is ray-cast at the feet (one voxel
  above the outline) and a foot that lands within 8 % of the carving's height of its lowest point counts as
  resting. Printed per yaw (``-`` = the mid-plane): the fraction of the silhouette the carving covers / feet resting.

    python3 research/symmetry_plane.py photo GT_ROOT [GT_ROOT ...]
    python3 research/symmetry_plane.py feet GT_ROOT [GT_ROOT ...]

The true yaw of ``NAME_rT`` folders (meshes turned by T degrees, prepared by weightfree_ablation.py) is T: the
models stand side-on at turn 0 (their symmetry plane is the mid-plane).
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import signal

from glimpse3d_core.benchmark import find_objects, load_ground_truth
from glimpse3d_core.chain import Chain
from glimpse3d_core.config import PipelineConfig
from glimpse3d_core.stages import reconstruct as rec

PHOTO_YAWS = tuple(range(-75, 90, 15))
FEET_YAWS = (None, *(float(y) for y in np.arange(-67.5, 68.0, 7.5) if abs(y) >= 22.5))


def photo_consistency(rgb: np.ndarray, depth: np.ndarray, proj: rec._Projector, normal: np.ndarray,
                      lateral: np.ndarray, yaw: float) -> tuple[float, int]:
    """(mean |RGB difference|, pairs) between the photo and its reflection in the plane at ``yaw`` (see above)."""
    vs, us = np.nonzero(depth > 0)
    points = proj.center + depth[vs, us][:, None] * proj.rays(us + 0.5, vs + 0.5)
    m = np.cos(np.radians(yaw)) * normal + np.sin(np.radians(yaw)) * lateral
    u2, v2, z2 = proj.project(points - 2.0 * (points @ m)[:, None] * m)
    rows, cols = np.clip(v2.astype(int), 0, depth.shape[0] - 1), np.clip(u2.astype(int), 0, depth.shape[1] - 1)
    seen = (depth[rows, cols] > 0) & (np.abs(depth[rows, cols] - z2) < 0.02) & (np.hypot(u2 - us, v2 - vs) > 3)
    diff = np.mean([np.abs(rec._sample(rgb[..., k], u2, v2) - rgb[vs, us, k]) for k in range(3)], axis=0)
    return (float(diff[seen].mean()) if seen.any() else float("nan")), int(seen.sum())


def feet_pixels(mask: np.ndarray, prominence: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
    """(u, v): local lowest points of the silhouette's bottom outline standing out by ``prominence`` x height."""
    cols = np.flatnonzero(mask.any(axis=0))
    bottom = mask.shape[0] - 1 - np.argmax(mask[::-1, cols], axis=0)
    rows = np.flatnonzero(mask.any(axis=1))
    _, props = signal.find_peaks(np.concatenate([[-1], bottom, [-1]]), plateau_size=1,
                                 prominence=prominence * (rows[-1] - rows[0] + 1))
    middle = (props["left_edges"] + props["right_edges"]) / 2.0 - 1.0
    return cols[0] + middle + 0.5, np.interp(middle, np.arange(len(bottom)), bottom) + 0.5


def _heights(mesh, proj: rec._Projector, us: np.ndarray, vs: np.ndarray) -> np.ndarray:
    """Height above the mesh's lowest point (fraction of its height) of the first hit at each pixel; NaN: miss."""
    dirs = proj.rays(us, vs)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    hits, ids, _ = mesh.ray.intersects_location(np.repeat(proj.center[None], len(dirs), 0), dirs,
                                                multiple_hits=False)
    low, high = mesh.bounds[:, 2]
    out = np.full(len(dirs), np.nan)
    out[ids] = (hits[:, 2] - low) / (high - low)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cue", choices=["photo", "feet"])
    parser.add_argument("roots", nargs="+")
    args = parser.parse_args()
    chain = Chain.prepare(PipelineConfig.from_preset("fast").with_overrides(
        {"device": "cpu", "input_camera": "syncdreamer16"}))
    yaws = PHOTO_YAWS if args.cue == "photo" else FEET_YAWS
    print("object | true | " + " | ".join("-" if y is None else f"{y:g}" for y in yaws))
    for root in args.roots:
        for name, folder in find_objects(root).items():
            gt = load_ground_truth(folder)
            seg = chain.segment(gt.rgb[0], gt.alpha[0], name)
            proj = rec._Projector(seg.camera)
            normal, lateral = rec._mid_plane_axes(proj)
            true = float(name.rpartition("_r")[2]) if "_r" in name else 0.0
            cells = []
            if args.cue == "photo":
                for yaw in yaws:
                    diff, pairs = photo_consistency(seg.image.rgb.astype(np.float64), gt.depth[0], proj, normal,
                                                    lateral, yaw)
                    cells.append(f"{diff:.3f}/{pairs}")
            else:
                mask = seg.image.alpha > 0.5
                us, vs = feet_pixels(mask)
                sv, su = np.nonzero(mask[::4, ::4])
                depth = chain.depth(seg.image)
                for yaw in yaws:
                    settings = rec.CarvingSettings(resolution=64, symmetry_yaw_deg=yaw)
                    mesh, voxel, _ = rec._carve_mesh(seg.image, depth, seg.camera, settings)
                    cover = np.isfinite(_heights(mesh, proj, su * 4 + 2.0, sv * 4 + 2.0)).mean()
                    up = voxel * float(proj.K[1, 1]) / float(np.linalg.norm(proj.center))
                    resting = int((_heights(mesh, proj, us, vs - up) < 0.08).sum())
                    cells.append(f"{cover:.2f}/{resting}")
            print(f"{name} | {true:g} | " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
