"""Seconds per image of the whole pipeline on CPU with the default (``fast``) preset, stage by stage.

Runs ``run_pipeline`` on each photo (default: the bundled examples/images/*.png) with ``--threads`` torch threads
and prints a table of per-stage seconds. The machine's load average is printed too: on a shared machine other
processes' load inflates wall-clock times, so compare numbers taken at a similar load. ``--set`` overrides
config fields as in research/eval_quality.py.

    python3 research/bench_pipeline.py [--images a.png b.png] [--threads 2] [--out /tmp/bench_pipeline]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


from glimpse3d_core.config import PipelineConfig, parse_assignments
from glimpse3d_core.pipeline import STAGES, run_pipeline

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, nargs="*", default=sorted((REPO / "examples" / "images").glob("*.png")))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", dest="overrides", nargs="*", default=[])
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_pipeline"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = PipelineConfig.from_dict({"device": "cpu", **parse_assignments(args.overrides)})
    rows = []
    for image in args.images:
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        result = run_pipeline(image, args.out, config)
        total = time.perf_counter() - start
        rows.append({"image": image.name, "seconds": total, "load_before": load_before,
                     "load_after": os.getloadavg()[0], **{s: result.timings[s] for s in STAGES},
                     "input_psnr": result.metrics["input_psnr"], "num_gaussians": len(result.gaussians)})
        print(json.dumps(rows[-1]), flush=True)
    header = ["image", "seconds", *STAGES, "load_before", "load_after"]
    print("| " + " | ".join(header) + " |\n|" + " --- |" * len(header))
    for r in rows:
        print("| " + " | ".join(r[h] if isinstance(r[h], str) else f"{r[h]:.1f}" for h in header) + " |")
    mean = sum(r["seconds"] for r in rows) / max(len(rows), 1)
    print(f"mean {mean:.1f} s/image over {len(rows)} images, preset {config.preset}, {args.threads} threads")


if __name__ == "__main__":
    main()
