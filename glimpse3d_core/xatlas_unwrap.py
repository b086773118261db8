"""xatlas's UV unwrap as a child process: ``python -m glimpse3d_core.xatlas_unwrap`` reads one pickled request
``(vertices [V,3] float32, faces [F,3] uint32, size, padding, chart_iterations)`` on stdin and writes the pickled
answer on stdout: (source vertex index per new vertex [V'], faces [F,3], uv [V',2] in [0,1]) as int64/int64/float64,
or the message of a mesh xatlas could not pack into one atlas. :func:`glimpse3d_core.texture.uv_atlas` runs it.

Imports only numpy, xatlas and the failpoints (a fresh interpreter starts in ~0.15 s).
"""

from __future__ import annotations

import pickle
import sys

import numpy as np
import xatlas

from glimpse3d_core.failpoints import failpoint


def unwrap(vertices: np.ndarray, faces: np.ndarray, size: int, padding: int,
           chart_iterations: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | str:
    """The atlas arrays, or the message of a mesh xatlas could not pack in one atlas."""
    atlas = xatlas.Atlas()
    atlas.add_mesh(vertices, faces)
    charts = xatlas.ChartOptions()
    charts.max_iterations = chart_iterations
    pack = xatlas.PackOptions()
    pack.resolution = size
    pack.padding = padding
    pack.bilinear = True
    atlas.generate(charts, pack)
    if atlas.atlas_count != 1:  # xatlas sizes the charts to fit one atlas; several would overlap in [0,1]²
        return f"xatlas packed the mesh into {atlas.atlas_count} atlases, expected one"
    vmapping, new_faces, uv = atlas[0]
    return vmapping.astype(np.int64), new_faces.astype(np.int64), uv.astype(np.float64)


def main() -> None:
    request = pickle.load(sys.stdin.buffer)
    failpoint("texture.unwrap")
    pickle.dump(unwrap(*request), sys.stdout.buffer)


if __name__ == "__main__":
    main()
