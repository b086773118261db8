"""The whole learned chain on one GPU, per stage: full-size models with random weights in the released layouts.

What it does, in one process (or ``--concurrent N`` processes sharing the GPU):

1. Builds every model the configuration's learned backends select (``auto`` takes a model when its weights are
   present), at full size with random weights, initialised on the GPU and saved in the released file layout into a
   fresh model folder (``GLIMPSE3D_MODELS_DIR=<work>/models``): rembg's U²-Net (ONNX), DPT-Hybrid (or DPT-Large),
   TripoSR, SyncDreamer, SDXL-Lightning + depth ControlNet, and CLIP for the export's metric
   (:mod:`gpu_models`). The registry's size checks apply: a wrongly sized file would be an error, not a model.
   Build time and bytes written are reported per model.
2. Loads each stage's backend once (:class:`~glimpse3d_core.chain.Chain`; load seconds and resident GPU memory).
   A backend that fails to build is recorded and its stage falls back to its weight-free backend.
3. Random TripoSR weights never reach the released density threshold (25); the iso-level is set once to the
   density's 97th percentile on the first image (:func:`gpu_triposr.iso_level`, recorded with the face count of
   that noise surface, which has more faces than an object's: reconstruct's time is an upper bound).
4. Runs ``--images`` photos one after the other through :func:`~glimpse3d_core.pipeline.run_pipeline` (the chain as
   ``glimpse3d run`` computes it), preset ``quality`` (what ``--preset auto`` gives on CUDA). Per stage: wall
   seconds and peak GPU memory (``torch.cuda.max_memory_allocated``, reset at each stage's start). The photos
   are examples/images and the shared inputs (cycled to ``--images``); a photo without alpha gets the weight-free
   matting's alpha beforehand, so every later stage sees an object. ``segment_model`` times the segment backend
   (rembg's U²-Net on onnxruntime, CPU unless onnxruntime-gpu is installed) on each photo's RGB: its random mask is
   discarded, the chain's ``segment`` then frames the photo by its alpha; the per-image total counts both, as for a
   photo without alpha.
5. Each process's first image is *cold* (first-call costs: cuDNN autotuning, allocator growth, gsplat's first
   call, which JIT-builds its CUDA extension where no prebuilt one is installed) and reported apart; warm figures
   come from the others: mean and median seconds per stage, mean seconds per image, and images/hour measured over
   the warm window (from the moment every process has finished its cold image to the end of the last image).

Every image prints one JSON line; the JSON at ``--out`` is rewritten after every step (partial results survive a
timeout), and a table ends the run. An image that fails records its error and stage (the stages it finished keep
their figures) and the run goes on. ``--deadline-s`` starts no image that many seconds after the start (a device
call has a time limit). ``--dtype bf16`` (or ``fp16``, ``fp32``) sets the model backends' inference dtype
(``PipelineConfig.dtype``; the default, ``auto``, is fp16 on CUDA); steps, resolutions and guidance stay as they are.

Weights are random, so every model's output is meaningless: the model stages cost what the real models cost (same
architectures, steps, resolutions, guidance), while optimise, refine and export fit noise-like targets (Gaussian
counts are recorded per image: densification may grow more than on a real object).

GPU run (one H200; ``$OUT`` is the device tool's output folder; needs the ``models``, ``gpu`` and ``dev`` extras:
rembg, onnxruntime, onnx for the U²-Net export, diffusers, gsplat, and pytest for the tests' builders it reuses)::

    PYTHONUNBUFFERED=1 python3 research/bench_learned_chain.py --work /tmp/g3chain --deadline-s 240 \\
        --out $OUT/learned_chain_h200.json

Estimate, from the parts measured so far (H100 / H200): set-up ~2 min (imports and CUDA ~15 s; weights 60-80 s for
~19 GB: SyncDreamer 5.6, SDXL UNet 5.1, ControlNet 2.5, TripoSR 1.7, text encoders 1.6 GB, ...; loading ~20 s;
TripoSR calibration ~5 s), the cold image ~30-40 s (minutes more if gsplat JIT-builds), then ~20 s per warm image
(H200, research/results/gpu_speed.md: SyncDreamer 3.5, SDXL 2.7, optimise 5.3, export 4.9, the rest ~3.5). 6 images
take ~4.5 minutes with the weights built; 24 images with ``--concurrent 6``, ``--mps`` and ``--reuse-weights`` ~6
minutes. ``--concurrent N`` runs that many processes on the GPU, each with its own copy of the models (~13 GiB
resident) and its share of the CPU cores (``--threads``, default cores / processes: torch, OpenMP, BLAS and numba
pools, which otherwise each size themselves to every core); each GPU stage holds a GPU lease while it runs, as a
Dagster step does (:class:`StageProbe`): an H200 has 6 slots (``GLIMPSE3D_GPU_SLOTS`` sets another count), each
step takes one. ``--mps`` runs them under NVIDIA's Multi-Process Service (its daemon started for the run, the bench
itself in a child process so that the daemon can quit after it): their kernels then share the GPU side by side
instead of taking turns (6 processes on an H200: 267.8 → 390.6 images/hour, research/results/gpu_speed.md).

CPU dry run of the same code at tiny sizes (tiny widths, 3 photos, 2 optimisation steps; ~5 min on 2 busy cores)::

    python3 research/bench_learned_chain.py --tiny
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's packages before an installed copy

from gpu_models import save_clip, save_dpt, save_sdxl, save_syncdreamer, save_triposr, save_u2net
from gpu_triposr import iso_level

from glimpse3d_assets.gpu import step_gib, uses_gpu
from glimpse3d_cli.run import collect_inputs
from glimpse3d_core.backends.base import AUTO, get_backend
from glimpse3d_core.chain import SELECTED_STAGES, STAGES, Chain
from glimpse3d_core.config import PipelineConfig, parse_assignments
from glimpse3d_core.gpu_lease import LEASE_DIR_ENV, GpuLeaseConfig, gpu_lease
from glimpse3d_core.io.atomic import atomic_write_bytes
from glimpse3d_core.io.images import load_image, save_png
from glimpse3d_core.metrics import json_safe
from glimpse3d_core.models.loading import clear_cache
from glimpse3d_core.models.registry import ENHANCE_MODELS, MODELS, get_spec
from glimpse3d_core.models.store import ModelStore
from glimpse3d_core.models.syncdreamer import SyncDreamerConfig
from glimpse3d_core.models.syncdreamer.loader import CHECKPOINT_NAME
from glimpse3d_core.models.triposr import TripoSRConfig
from glimpse3d_core.models.triposr.mesh import DENSITY_THRESHOLD
from glimpse3d_core.pipeline import run_pipeline
from glimpse3d_core.stages import segment
from glimpse3d_core.threads import available_cores

REPO = Path(__file__).resolve().parents[1]
SHARED_INPUTS = Path(os.environ.get("GLIMPSE3D_SHARED_DATA", REPO.parent / "shared" / "data")) / "inputs"
INPUTS = [REPO / "examples" / "images", SHARED_INPUTS, REPO / "shared" / "data" / "inputs"]
"""Default photos: the bundled examples and the shared inputs (beside the checkout, or inside it on the device)."""
MEASURED = ("segment_model", *STAGES)
"""Per-image timings: the segment model on the photo's RGB, then the chain's stages."""
DTYPE_ALIASES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}
GIB = 2**30
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")
"""The thread-pool sizes of OpenMP, BLAS and numba, read when each library starts."""
BARRIER_TIMEOUT_S = 600


Builder = Callable[[ModelStore, str, bool], object]
"""``(store, device, tiny)``: writes a group of models into the store's model folder."""


def _u2net(store: ModelStore, device: str, tiny: bool) -> None:
    save_u2net(store.model_dir(MODELS["rembg-u2net"]) / "u2net.onnx", width_divisor=16 if tiny else 1)


def _triposr(store: ModelStore, device: str, tiny: bool) -> None:
    save_triposr(store.model_dir(MODELS["triposr"]), TripoSRConfig.tiny() if tiny else TripoSRConfig(), device)


def _syncdreamer(store: ModelStore, device: str, tiny: bool) -> None:
    save_syncdreamer(store.model_dir(MODELS["syncdreamer"]) / CHECKPOINT_NAME,
                     SyncDreamerConfig.tiny() if tiny else SyncDreamerConfig(), device)


def _sdxl(store: ModelStore, device: str, tiny: bool) -> None:
    from tests.test_backends import save_tiny_sdxl

    if tiny:
        save_tiny_sdxl(store)
    else:
        save_sdxl(store, device)


def _library(model_id: str) -> Builder:
    """DPT (``model_id``) or CLIP; tiny: the tests' tiny configurations."""
    def build(store: ModelStore, device: str, tiny: bool) -> None:
        from tests.test_backends import save_tiny_clip, save_tiny_dpt

        clip = model_id.startswith("clip")
        if tiny:
            (save_tiny_clip if clip else save_tiny_dpt)(store.model_dir(MODELS[model_id]))
        elif clip:
            save_clip(store, device)
        else:
            save_dpt(store, model_id, device)

    return build


SDXL_IDS = (*ENHANCE_MODELS, "controlnet-depth-sdxl")
BUILDERS: dict[tuple[str, ...], Builder] = {
    ("rembg-u2net",): _u2net, ("dpt-hybrid-midas",): _library("dpt-hybrid-midas"),
    ("dpt-large",): _library("dpt-large"), ("triposr",): _triposr, ("syncdreamer",): _syncdreamer, SDXL_IDS: _sdxl,
    ("clip-vit-base-patch32",): _library("clip-vit-base-patch32"),
}
"""Registry ids built together -> their builder."""


def tiny_overrides() -> dict[str, Any]:
    """Settings that fit the tiny models (on top of the ``smoke`` preset): 2 optimisation steps, 2 re-fit steps."""
    from tests.tiny_models import TINY_SYNCDREAMER

    return {"optimize": {"iterations": 2}, "refine": {"refit_iterations": 2},
            "reconstruct": {"backend": {"model": {"mc_resolution": 32}}},
            "multiview": {"backend": {"model": TINY_SYNCDREAMER.model_dump()}},
            "enhance": {"backend": {"model": {"resolution": 32}}}}


def stage_models(config: PipelineConfig) -> list[str]:
    """Registry ids of the model backends the configuration asks for (``auto``: its model), plus the export's CLIP."""
    ids: list[str] = []
    for stage in SELECTED_STAGES:
        backend = getattr(config, stage).backend
        settings = backend.model if backend.name == AUTO else backend
        ids += get_backend(stage, settings.name).models(settings)
    return list(dict.fromkeys([*ids, config.export.clip_model]))


def quiet_libraries() -> None:
    """No progress bars or advice from transformers / diffusers / the hub (the device returns the output's tail)."""
    os.environ.update({"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error",
                       "DIFFUSERS_VERBOSITY": "error"})
    for name in ("transformers", "diffusers"):
        try:
            logging = __import__(f"{name}.utils.logging", fromlist=["logging"])
        except ImportError:
            continue
        logging.set_verbosity_error()
        logging.disable_progress_bar()


def gib(value: int) -> float:
    return round(value / GIB, 3)


def sync(cuda: bool) -> float:
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter()


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def use_tiny_specs(store: ModelStore, ids: list[str]) -> None:
    """Describe the tiny files just written by the real specs with their exact sizes (as the tests do)."""
    from tests.test_backends import tiny_spec

    for model_id in ids:
        real = get_spec(model_id)
        MODELS[model_id] = tiny_spec(real, store.model_dir(real))


def build_weights(store: ModelStore, ids: list[str], tiny: bool, device: str, reuse: bool,
                  report: Callable[[], None], results: dict) -> list[str]:
    """Build every group of models ``ids`` needs; returns the ids built (a failed group leaves no files)."""
    built: list[str] = []
    for group, build in BUILDERS.items():
        if not set(group) & set(ids):
            continue
        label = "sdxl (+controlnet)" if group == SDXL_IDS else group[0]
        folders = [store.model_dir(MODELS[i]) for i in group]
        if reuse and all((f / s.path).is_file() for f, i in zip(folders, group, strict=True)
                         for s in MODELS[i].files):
            results["weights"][label] = {"reused": True, "bytes": sum(folder_bytes(f) for f in folders)}
            built += group
            continue
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
        start = time.perf_counter()
        try:
            build(store, device, tiny)
            seconds = time.perf_counter() - start
            size = sum(folder_bytes(f) for f in folders)
            results["weights"][label] = {"seconds": round(seconds, 1), "bytes": size,
                                         "gb_per_s": round(size / 1e9 / max(seconds, 1e-9), 2)}
            built += group
        except Exception as exc:  # a model that cannot be built: its stage runs weight-free
            for folder in folders:
                shutil.rmtree(folder, ignore_errors=True)
            results["weights"][label] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        print(f"weights {label}: {json.dumps(results['weights'][label])}", flush=True)
        report()
    return built


def prepare_inputs(sources: list[Path], count: int, folder: Path, config: PipelineConfig) -> list[Path]:
    """``count`` photos (``sources`` cycled) as RGBA PNGs named NN_<stem>.png; a photo without a meaningful alpha
    gets the weight-free matting's."""
    folder.mkdir(parents=True, exist_ok=True)
    matting = segment.MattingSettings()
    out = []
    for i in range(count):
        source = sources[i % len(sources)]
        rgb, alpha = load_image(source)
        if not segment.has_meaningful_alpha(alpha, config.segment):
            alpha = segment.matting(rgb, matting)
        out.append(save_png(folder / f"{i:02d}_{source.stem}.png", rgb, alpha))
    return out


class StageProbe:
    """``run_pipeline``'s progress callback: seconds and peak GPU memory of each stage that finished, and the stage
    running now. Each stage a Dagster step would run on the GPU (``glimpse3d_assets.gpu.uses_gpu``) holds a GPU
    lease while it runs, as many slots as its backend's memory needs, as the step would
    (:mod:`glimpse3d_core.gpu_lease`): ``--concurrent`` processes share the GPU as a batch's steps do. The lease
    is taken before the stage's clock starts; its wait is recorded apart (``lease_wait_s``)."""

    def __init__(self, cuda: bool, chain: Chain) -> None:
        self.cuda = cuda
        self.chain = chain
        self.seconds: dict[str, float] = {}
        self.peak_gib: dict[str, float] = {}
        self.lease_wait_s: dict[str, float] = {}
        self.current: str | None = None
        self.lease = ExitStack()
        self.lease_config = GpuLeaseConfig.from_env() if cuda else None  # once: it asks nvidia-smi for the memory

    def __call__(self, stage: str, event: str, seconds: float) -> None:
        self.current = stage if event == "start" else None
        if event == "end":
            self.release()
            self.seconds[stage] = round(seconds, 3)
        elif uses_gpu(stage, self.chain):
            lease = self.lease.enter_context(gpu_lease(self.lease_config, gib=step_gib(stage, self.chain),
                                                       set_device=False))
            self.lease_wait_s[stage] = round(lease.waited_s, 3)
        if not self.cuda:
            return
        torch.cuda.synchronize()
        if event == "start":
            torch.cuda.reset_peak_memory_stats()
        else:
            self.peak_gib[stage] = gib(torch.cuda.max_memory_allocated())

    def release(self) -> None:
        """Let go of the running stage's lease (at its end, or when it failed)."""
        self.lease.close()


def fallback_overrides(stage: str) -> dict[str, Any]:
    """The stage switched to the weight-free backend its default ``auto`` falls back to."""
    return {stage: {"backend": getattr(PipelineConfig(), stage).backend.fallback.name}}


def load_backends(config: PipelineConfig, cuda: bool, record: dict) -> tuple[PipelineConfig, Chain]:
    """Select and build every stage's backend once (cached for the run's later chains); a backend that fails to
    build is recorded and its stage falls back to its weight-free backend."""
    chain = Chain.prepare(config)
    for stage in SELECTED_STAGES:
        start = sync(cuda)
        try:
            chain.backend(stage)
            record[stage] = {"backend": chain.backend_names[stage], "reason": chain.selections[stage].reason,
                             "load_s": round(sync(cuda) - start, 2)}
        except Exception as exc:
            record[stage] = {"backend": chain.backend_names[stage], "error": f"{type(exc).__name__}: {exc}"[:500]}
            config = config.with_overrides(fallback_overrides(stage))
            chain = Chain.prepare(config)
            record[stage]["fell_back_to"] = chain.backend_names[stage]
        if cuda:
            record[stage]["resident_gib"] = gib(torch.cuda.memory_allocated())
    clip = config.export.clip_model
    if chain.context.store.status(clip).present:  # the export's CLIP metric, on the device its Gaussians are on
        from glimpse3d_core.backends.clip_similarity import ClipSimilarity

        start = sync(cuda)
        try:
            ClipSimilarity(clip, chain.context.store, torch.empty(0, device=chain.context.device).device)
            record["export_clip"] = {"load_s": round(sync(cuda) - start, 2)}
        except Exception as exc:  # no CLIP metric rather than a failed export
            record["export_clip"] = {"error": f"{type(exc).__name__}: {exc}"[:500], "removed": True}
            shutil.rmtree(chain.context.store.model_dir(get_spec(clip)), ignore_errors=True)
    return config, chain


def calibrate_triposr(config: PipelineConfig, chain: Chain, photo: Path) -> tuple[PipelineConfig, dict]:
    """With random TripoSR weights, the iso-level of the first photo's density (see the module docstring), and one
    reconstruction at that level (its faces and seconds)."""
    selection = chain.selections["reconstruct"]
    if selection.settings.name != "triposr":
        return config, {}
    from glimpse3d_core.backends.triposr_reconstruct import build

    rgb, alpha = load_image(photo)
    seg = chain.segment(rgb, alpha, photo.stem)
    level, above = iso_level(build(selection.settings, chain.context), seg.image)
    info: dict[str, Any] = {"voxels_above_25": above, "iso_level": level}
    if level != DENSITY_THRESHOLD:
        update = {"density_threshold": level}
        backend = {"model": update} if config.reconstruct.backend.name == AUTO else update
        config = config.with_overrides({"reconstruct": {"backend": backend}})
        reconstructor = build(selection.settings.model_copy(update=update), chain.context)
        start = sync(chain.context.device.type == "cuda")
        mesh = reconstructor.reconstruct(seg.image, chain.depth(seg.image), seg.camera)
        info.update(faces=len(mesh.faces), vertices=len(mesh.vertices),
                    reconstruct_s=round(sync(chain.context.device.type == "cuda") - start, 2))
    return config, info


def run_image(config: PipelineConfig, chain: Chain, segmenter: Callable[[np.ndarray], np.ndarray], photo: Path,
              out: Path, cuda: bool) -> dict[str, Any]:
    """One photo: the segment model on its RGB, then the chain; seconds, lease waits and peak GPU memory per stage
    (of the stages that finished, when one fails)."""
    probe = StageProbe(cuda, chain)
    record: dict[str, Any] = {"image": photo.stem}
    start = time.perf_counter()
    try:
        rgb, _ = load_image(photo)
        probe("segment_model", "start", 0.0)
        t = time.perf_counter()
        segmenter(rgb)
        probe("segment_model", "end", sync(cuda) - t)
        metrics = run_pipeline(photo, out, config, progress=probe, name=photo.stem).metrics
        record.update({k: metrics.get(k) for k in ("gaussians_initial", "gaussians_optimized",
                                                   "optimize_iterations_per_second", "input_psnr", "backends",
                                                   "export_seconds", "mesh_faces")})
    except Exception as exc:
        probe.release()
        record["error"] = f"{type(exc).__name__}: {exc}"[:500]
        record["failed_stage"] = probe.current
        record["traceback"] = traceback.format_exc()[-1500:]
        if cuda:
            torch.cuda.empty_cache()
    record["wall_s"] = round(sync(cuda) - start, 3)
    record["end_time"] = time.time()
    record["seconds"] = probe.seconds
    record["total_s"] = round(sum(probe.seconds.values()), 3)
    record["peak_gib"] = probe.peak_gib
    record["lease_wait_s"] = probe.lease_wait_s
    return record


def worker(rank: int, plan: dict[str, Any], emit: Callable[[dict], None], barrier: Any = None) -> None:
    """Load the models, calibrate, then run this process's share of the photos (the first one cold)."""
    os.environ.update(plan["env"])
    torch.set_num_threads(plan["threads"])
    quiet_libraries()
    if plan["tiny"]:
        use_tiny_specs(ModelStore(), plan["built"])
    config = PipelineConfig.model_validate(plan["config"])
    cuda = torch.cuda.is_available() and config.context().device.type == "cuda"
    photos = [Path(p) for p in plan["photos"]][rank::plan["workers"]]
    if not photos:
        emit({"event": "done", "rank": rank, "error": "no photo for this process"})
        return
    setup: dict[str, Any] = {"event": "setup", "rank": rank, "backends": {}}
    config, chain = load_backends(config, cuda, setup["backends"])
    try:
        config, setup["triposr_calibration"] = calibrate_triposr(config, chain, Path(plan["photos"][0]))
    except Exception as exc:
        setup["triposr_calibration"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        config, chain = load_backends(config.with_overrides(fallback_overrides("reconstruct")), cuda, {})
    setup["config"] = config.model_dump(mode="json")
    setup["selected"] = chain.backend_names
    if cuda:
        setup["resident_gib"] = gib(torch.cuda.memory_allocated())
    emit(setup)
    segmenter = chain.backend("segment")
    for i, photo in enumerate(photos):
        if i and plan["deadline"] is not None and time.time() > plan["deadline"]:
            emit({"event": "skipped", "rank": rank, "images": [p.stem for p in photos[i:]]})
            break
        emit({"event": "image", "rank": rank, "cold": i == 0,
              **run_image(config, chain, segmenter, photo, Path(plan["out_dir"]), cuda)})
        if i == 0:
            if barrier is not None:
                try:
                    barrier.wait(BARRIER_TIMEOUT_S)
                except Exception as exc:  # a process that died: the others go on
                    emit({"event": "barrier", "rank": rank, "error": type(exc).__name__})
            emit({"event": "warm", "rank": rank, "time": time.time()})
    end: dict[str, Any] = {"event": "done", "rank": rank}
    if cuda:
        end["max_reserved_gib"] = gib(torch.cuda.max_memory_reserved())
        free, total = torch.cuda.mem_get_info()
        end["device_used_gib"] = gib(total - free)
    emit(end)
    clear_cache()


def run_worker(rank: int, plan: dict, emit: Callable[[dict], None], barrier: Any = None) -> None:
    """:func:`worker`, whose unexpected failure is reported as its end."""
    try:
        worker(rank, plan, emit, barrier)
    except Exception as exc:
        emit({"event": "done", "rank": rank, "error": f"{type(exc).__name__}: {exc}"[:500],
              "traceback": traceback.format_exc()[-1500:]})


def _spawned(rank: int, plan: dict, queue: Any, barrier: Any) -> None:
    run_worker(rank, plan, queue.put, barrier)


def summarise(results: dict) -> dict[str, Any]:
    """Per-stage cold / warm seconds and peak memory (over every image that finished that stage), the export's
    parts and optimize's step rate (warm means), warm seconds per image and images per hour (over the images that
    finished)."""
    images = results["images"]
    ok = [r for r in images if "error" not in r]
    warm = [r for r in ok if not r["cold"]]
    cold = [r for r in ok if r["cold"]]

    def mean(values: list[float]) -> float | None:
        return round(float(np.mean(values)), 3) if values else None

    def seconds(stage: str, is_cold: bool) -> list[float]:
        return [r["seconds"][stage] for r in images if r["cold"] == is_cold and stage in r["seconds"]]

    stages = {s: {"cold_s": mean(seconds(s, True)), "warm_mean_s": mean(seconds(s, False)),
                  "warm_median_s": round(float(np.median(seconds(s, False))), 3) if seconds(s, False) else None,
                  "peak_gib": max((r["peak_gib"][s] for r in images if s in r["peak_gib"]), default=None)}
              for s in MEASURED}
    summary: dict[str, Any] = {
        "images_ok": len(ok), "images_failed": len(images) - len(ok), "images_warm": len(warm),
        "images_skipped": sum(len(e["images"]) for e in results["skipped"]),
        "stages": stages,
        "cold_s_per_image": mean([r["wall_s"] for r in cold]),
        "warm_s_per_image": mean([r["wall_s"] for r in warm]),
        "warm_stage_sum_s_per_image": mean([r["total_s"] for r in warm]),
        "peak_gib": max([s["peak_gib"] for s in stages.values() if s["peak_gib"] is not None] + [
            b["resident_gib"] for w in results["setup"] for b in w["backends"].values() if "resident_gib" in b],
            default=None),
    }
    parts = sorted({part for r in warm for part in r.get("export_seconds") or {}})
    summary["export_parts_warm_mean_s"] = {
        part: mean([r["export_seconds"][part] for r in warm if part in (r.get("export_seconds") or {})])
        for part in parts}
    summary["optimize_it_s_warm_mean"] = mean([r["optimize_iterations_per_second"] for r in warm
                                              if r.get("optimize_iterations_per_second")])
    warm_from = [e["time"] for e in results["warm"]]
    if warm and len(warm_from) == results["workers"]:
        window = max(r["end_time"] for r in warm) - max(warm_from)
        summary["warm_window_s"] = round(window, 1)
        summary["images_per_hour"] = round(len(warm) / window * 3600.0, 1) if window > 0 else None
    if summary["warm_s_per_image"]:
        summary["images_per_hour_one_process"] = round(3600.0 / summary["warm_s_per_image"], 1)
    return summary


def table(summary: dict[str, Any]) -> str:
    def cell(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    lines = [f"{'stage':<16}{'cold s':>10}{'warm mean s':>13}{'warm median':>13}{'peak GiB':>10}"]
    for stage, row in summary["stages"].items():
        lines.append(f"{stage:<16}{cell(row['cold_s']):>10}{cell(row['warm_mean_s']):>13}"
                     f"{cell(row['warm_median_s']):>13}{cell(row['peak_gib']):>10}")
        if stage == "export":
            lines += [f"{'  ' + part:<26}{cell(value):>13}"
                      for part, value in summary.get("export_parts_warm_mean_s", {}).items()]
    lines.append(f"{'per image':<16}{cell(summary['cold_s_per_image']):>10}{cell(summary['warm_s_per_image']):>13}")
    for key in ("optimize_it_s_warm_mean", "images_ok", "images_warm", "images_failed", "images_skipped", "peak_gib",
                "warm_window_s", "images_per_hour", "images_per_hour_one_process"):
        lines.append(f"{key}: {summary.get(key)}")
    return "\n".join(lines)


MPS_CHILD = "GLIMPSE3D_BENCH_UNDER_MPS"
"""Set in the run's process that ``--mps`` starts under the daemon."""


@contextmanager
def mps_daemon(folder: Path) -> Iterator[None]:
    """NVIDIA's MPS control daemon for the ``with`` block (its pipe and log folders under ``folder``, exported to
    the CUDA processes started inside it), told to quit at the end, which waits until no process uses it."""
    pipes, logs = folder / "pipe", folder / "log"
    pipes.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    os.environ.update(CUDA_MPS_PIPE_DIRECTORY=str(pipes), CUDA_MPS_LOG_DIRECTORY=str(logs))
    subprocess.run(["nvidia-cuda-mps-control", "-d"], check=True)
    try:
        yield
    finally:
        subprocess.run(["nvidia-cuda-mps-control"], input="quit\n", text=True, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/g3chain"), help="weights, inputs and outputs")
    parser.add_argument("--out", type=Path, default=None, help="JSON results (default research/results/"
                        "learned_chain_h200.json; --tiny: research/results/tmp/learned_chain_tiny.json)")
    parser.add_argument("--inputs", type=Path, nargs="+", default=None, help="photos or folders (default: "
                        "examples/images and the shared inputs)")
    parser.add_argument("--images", type=int, default=None, help="photos to run (default 16; --tiny: 3)")
    parser.add_argument("--concurrent", type=int, default=1, help="processes sharing the GPU")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per process (default: this "
                        "machine's cores divided among the --concurrent processes)")
    parser.add_argument("--dtype", default="auto", choices=["auto", *DTYPE_ALIASES, *DTYPE_ALIASES.values()],
                        help="model backends' inference dtype (auto: float16 on CUDA)")
    parser.add_argument("--preset", default=None, help="pipeline preset (default quality; --tiny: smoke)")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="FIELD.PATH=VALUE override")
    parser.add_argument("--deadline-s", type=float, default=None, help="start no image after this many seconds")
    parser.add_argument("--reuse-weights", action="store_true", help="keep model files already in --work")
    parser.add_argument("--mps", action="store_true", help="run under NVIDIA's Multi-Process Service: a daemon "
                        "started for the run (and stopped after it) through which the processes' kernels share the "
                        "GPU side by side instead of taking turns")
    parser.add_argument("--tiny", action="store_true", help="tiny models and sizes (CPU dry run)")
    parser.add_argument("--summarise", type=Path, metavar="JSON", help="only print the table of a results file (e.g. "
                        "one that a time limit cut before its summary) and exit")
    args = parser.parse_args()
    if args.summarise:
        print(table(summarise(json.loads(args.summarise.read_text()))))
        return
    if args.concurrent < 1 or (args.threads is not None and args.threads < 1):
        parser.error("--concurrent and --threads take a whole number of at least 1")
    start = time.time()
    threads = args.threads or max(1, available_cores() // args.concurrent)
    env = {"GLIMPSE3D_MODELS_DIR": str(args.work / "models"), "HF_HUB_CACHE": str(args.work / "hf"),
           LEASE_DIR_ENV: str(args.work / f"leases-{os.getpid()}"),
           **{var: str(threads) for var in THREAD_VARIABLES}}
    os.environ.update(env)  # the spawned processes' libraries read their thread counts from it at start-up
    if args.mps and MPS_CHILD not in os.environ:
        # The daemon's quit waits for every client to leave, so the run goes in a child process: this one never
        # holds a CUDA context (asked to quit from inside the run, the daemon waited on the run for ever).
        with mps_daemon(args.work / "mps"):
            subprocess.run([sys.executable, *sys.argv], env={**os.environ, MPS_CHILD: "1"}, check=True)
        return
    run(args, start, env, threads)


def run(args: argparse.Namespace, start: float, env: dict[str, str], threads: int) -> None:
    """Steps 1-5 of the module docstring, from :func:`main`'s parsed arguments and environment."""
    quiet_libraries()
    out = args.out or REPO / "research" / "results" / (
        "tmp/learned_chain_tiny.json" if args.tiny else "learned_chain_h200.json")
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    config = PipelineConfig.from_preset(args.preset or ("smoke" if args.tiny else "quality")).with_overrides(
        {"dtype": DTYPE_ALIASES.get(args.dtype, args.dtype), **(tiny_overrides() if args.tiny else {})})
    config = config.with_overrides(parse_assignments(args.sets))
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
        "command": " ".join(sys.argv), "tiny": args.tiny, "workers": args.concurrent, "threads": threads,
        "mps": args.mps,
        "lease": GpuLeaseConfig.from_env().model_dump(include={"slots", "slot_gib"}) if cuda else None,
        "weights": {},
        "setup": [], "images": [], "warm": [], "skipped": [], "done": []}

    def report() -> None:
        results["elapsed_s"] = round(time.time() - start, 1)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, json.dumps(json_safe(results), indent=1, default=str).encode())

    store = ModelStore()
    ids = stage_models(config)
    t = time.perf_counter()
    built = build_weights(store, ids, args.tiny, device, args.reuse_weights, report, results)
    results["weights_total_s"] = round(time.perf_counter() - t, 1)
    results["weights_total_gb"] = round(sum(w.get("bytes", 0) for w in results["weights"].values()) / 1e9, 2)
    if args.tiny:
        use_tiny_specs(store, built)
    results["registry"] = {i: store.status(i).status.value for i in ids}
    if cuda:
        torch.cuda.empty_cache()
    photos = prepare_inputs(collect_inputs([p for p in args.inputs or INPUTS if p.exists()]),
                            args.images or (3 if args.tiny else 16), args.work / "inputs", config)
    results["photos"] = [p.name for p in photos]
    report()
    plan = {"env": env, "tiny": args.tiny, "built": built, "config": config.model_dump(mode="json"),
            "photos": [str(p) for p in photos], "workers": args.concurrent, "threads": threads,
            "out_dir": str(args.work / "out"),
            "deadline": None if args.deadline_s is None else start + args.deadline_s}

    def handle(event: dict) -> None:
        kind = event.pop("event")
        if kind == "image":
            print(json.dumps(json_safe({k: v for k, v in event.items() if k != "traceback"}), default=str),
                  flush=True)
        elif kind == "setup":
            print("setup", json.dumps(json_safe({k: v for k, v in event.items() if k != "config"}), default=str),
                  flush=True)
        else:
            print(kind, json.dumps(json_safe(event), default=str), flush=True)
        results.setdefault({"image": "images"}.get(kind, kind), []).append(event)
        report()

    if args.concurrent == 1:
        run_worker(0, plan, handle)
    else:
        context = mp.get_context("spawn")
        queue, barrier = context.Queue(), context.Barrier(args.concurrent)
        processes = [context.Process(target=_spawned, args=(r, plan, queue, barrier)) for r in range(args.concurrent)]
        for p in processes:
            p.start()
        finished = 0
        while finished < args.concurrent:
            try:
                event = queue.get(timeout=10)
            except Exception:  # queue.Empty: check that the workers are still there
                if not any(p.is_alive() for p in processes):
                    break
                continue
            finished += event["event"] == "done"
            handle(event)
        for p in processes:
            p.join()
    results["summary"] = summarise(results)
    report()
    print(table(results["summary"]))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
