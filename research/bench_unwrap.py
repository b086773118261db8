"""What isolating xatlas in a child process costs, in a process that holds a GPU's models.

The export stage unwraps in a child process (:func:`glimpse3d_core.texture.uv_atlas`). In a process holding
``--hold-gib`` GiB of CUDA memory (the learned chain holds ~13 GiB of models; 0: CUDA initialised, nothing held;
no CUDA: nothing), side by side on the same 8,000-face mesh (the export's ``texture_max_faces``; an icosphere
simplified to it):

* ``in_process_s``: xatlas itself, unisolated (:func:`glimpse3d_core.xatlas_unwrap.unwrap`);
* ``uv_atlas_s``: the product's call (a fresh interpreter: start, request, answer);
* ``fork_exit_s``: ``os.fork`` + ``os._exit`` + ``waitpid`` of this process, the overhead of a forked child (the
  export's isolation before it ran a fresh interpreter) before it does any work.

Median of ``--repeats``. Prints one JSON line per hold.

    python research/bench_unwrap.py [--hold-gib 0 13] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import trimesh

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from glimpse3d_core.texture import simplify, uv_atlas
from glimpse3d_core.types import MeshAsset
from glimpse3d_core.xatlas_unwrap import unwrap

FACES = 8000
ATLAS = 1024


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times), 4)


def fork_exit() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hold-gib", type=float, nargs="+", default=[0.0, 13.0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    sphere = trimesh.creation.icosphere(5)
    mesh = simplify(MeshAsset(sphere.vertices, sphere.faces, np.full((len(sphere.vertices), 3), 0.5)), FACES)
    vertices, faces = np.ascontiguousarray(mesh.vertices, np.float32), np.ascontiguousarray(mesh.faces, np.uint32)
    cuda = torch.cuda.is_available()
    for hold in args.hold_gib if cuda else [None]:
        held = torch.empty(int(hold * 2**30), dtype=torch.uint8, device="cuda") if cuda else None
        row = {"device": torch.cuda.get_device_name() if cuda else "cpu", "hold_gib": hold, "faces": len(faces),
               "in_process_s": median_seconds(lambda: unwrap(vertices, faces, ATLAS, 2, 0), args.repeats),
               "uv_atlas_s": median_seconds(lambda: uv_atlas(mesh, ATLAS), args.repeats),
               "fork_exit_s": median_seconds(fork_exit, args.repeats)}
        print(json.dumps(row), flush=True)
        del held
        if cuda:
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
