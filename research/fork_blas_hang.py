"""Why the export's parts run in sequence: a fork while another thread is inside an OpenBLAS call hangs that call.

One thread forks (and the child exits at once) in a loop, as :func:`glimpse3d_core.texture.uv_atlas` forks its xatlas
child, while the main thread multiplies 300x300 matrices with numpy; then the same products with no fork beside them.
The products run in a child process so that a hang cannot hold this one: it is stopped after ``--timeout-s``.

    python3 research/fork_blas_hang.py [--timeout-s 20]

Prints one JSON line per case: the products done and whether they finished.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import threading

import numpy as np

PRODUCTS = 400


def products(fork_beside: bool, done) -> None:
    stop = threading.Event()

    def forker() -> None:
        while not stop.is_set():
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)

    thread = threading.Thread(target=forker, daemon=True)
    if fork_beside:
        thread.start()
    a = np.random.default_rng(0).random((300, 300))
    for _ in range(PRODUCTS):
        a @ a
        done.value += 1
    stop.set()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout-s", type=float, default=20.0)
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    for fork_beside in (True, False):
        done = context.Value("i", 0)
        child = context.Process(target=products, args=(fork_beside, done))
        child.start()
        child.join(args.timeout_s)
        finished = child.exitcode == 0
        if child.is_alive():
            child.kill()
            child.join()
        print(json.dumps({"fork_beside": fork_beside, "products_done": done.value, "of": PRODUCTS,
                          "finished": finished, "timeout_s": args.timeout_s}), flush=True)


if __name__ == "__main__":
    main()
