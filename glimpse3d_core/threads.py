"""CPU thread pools of one process: torch's own and the native libraries' (OpenMP, BLAS), sized for a block.

Every pool sizes itself to all of the machine's cores by default, so processes that share the cores (GPU steps
that share a GPU, :mod:`glimpse3d_core.gpu_lease`) oversubscribe them. On an H200 host (16 cores), four learned
chains at once made 109.8 images/hour with every pool at 16 threads (research/results/learned_chain_h200_c4.json)
and 248.5 with each process held to 4 (learned_chain_h200_r3_c4.json; that run also had the banded-matrix SSIM and
the texture's colour fusion on the GPU). See research/results/gpu_speed.md.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from threadpoolctl import threadpool_limits


def available_cores() -> int:
    """CPU cores this process may run on (its affinity where the OS reports one, else every core)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextmanager
def cpu_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads and the OpenMP and BLAS pools (threadpoolctl) held to ``n`` inside the block, and
    put back as they were after it, also after an exception. Pools that a library keeps to itself (xatlas's,
    onnxruntime's) are not reached."""
    if n < 1:
        raise ValueError(f"a block needs at least one CPU thread, not {n}")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        torch.set_num_threads(before)
