"""GPU leases on fake device lists: one holder per slot across processes, spread over GPUs, freed on failure and
when the holder is SIGKILLed."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from glimpse3d_core.gpu_lease import (
    GpuLeaseConfig,
    GpuLeaseTimeout,
    default_slots,
    gpu_lease,
)

MP = multiprocessing.get_context("fork")


def config(tmp_path: Path, gpus=(0, 1), slots: int = 1, timeout_s: float = 30.0) -> GpuLeaseConfig:
    return GpuLeaseConfig(gpus=gpus, host_ids=tuple(str(g) for g in gpus), slots=slots, lease_dir=tmp_path,
                          timeout_s=timeout_s, poll_s=0.005)


def _worker(cfg: GpuLeaseConfig, log: Path, rounds: int) -> None:
    with log.open("a") as f:
        for _ in range(rounds):
            with gpu_lease(cfg, set_device=False) as lease:
                start = time.monotonic()
                time.sleep(0.01)
                f.write(f"{lease.index} {lease.slot} {start} {time.monotonic()}\n")
                f.flush()


def test_never_two_holders_of_one_gpu_across_processes(tmp_path):
    cfg = config(tmp_path / "locks")
    procs = [MP.Process(target=_worker, args=(cfg, tmp_path / f"log{i}", 8)) for i in range(5)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    holds: dict[int, list[tuple[float, float]]] = {}
    for i in range(5):
        for line in (tmp_path / f"log{i}").read_text().splitlines():
            gpu, slot, start, end = line.split()
            assert slot == "0"
            holds.setdefault(int(gpu), []).append((float(start), float(end)))
    assert sum(len(v) for v in holds.values()) == 40
    assert set(holds) == {0, 1}  # both GPUs served
    for intervals in holds.values():
        intervals.sort()
        for (_, end), (next_start, _) in itertools.pairwise(intervals):
            assert next_start >= end  # the next holder started after the last one let go


def test_slots_spread_over_gpus_then_share(tmp_path):
    cfg = config(tmp_path, gpus=(0, 1), slots=2, timeout_s=0.05)
    with gpu_lease(cfg, set_device=False) as a, gpu_lease(cfg, set_device=False) as b:
        assert {(a.index, a.slot), (b.index, b.slot)} == {(0, 0), (1, 0)}
        with gpu_lease(cfg, set_device=False) as c, gpu_lease(cfg, set_device=False) as d:
            assert {(c.index, c.slot), (d.index, d.slot)} == {(0, 1), (1, 1)}
            with pytest.raises(GpuLeaseTimeout, match="no GPU slot"), gpu_lease(cfg, set_device=False):
                pass
    assert a.device == "cuda:0" and a.metadata()["gpu"] == 0


def test_released_when_the_step_fails(tmp_path):
    cfg = config(tmp_path, gpus=(0,), timeout_s=0.05)
    with pytest.raises(RuntimeError, match="step failed"), gpu_lease(cfg, set_device=False):
        raise RuntimeError("step failed")
    with gpu_lease(cfg, set_device=False) as lease:
        assert lease.index == 0 and lease.waited_s < 0.05


def _hold_forever(cfg: GpuLeaseConfig, ready) -> None:
    with gpu_lease(cfg, set_device=False):
        ready.set()
        time.sleep(600)


def test_released_when_the_holder_is_killed(tmp_path):
    cfg = config(tmp_path, gpus=(3,), timeout_s=0.2)
    ready = MP.Event()
    holder = MP.Process(target=_hold_forever, args=(cfg, ready))
    holder.start()
    assert ready.wait(30)
    with pytest.raises(GpuLeaseTimeout), gpu_lease(cfg, set_device=False):
        pass
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(30)
    assert holder.exitcode == -signal.SIGKILL
    with gpu_lease(cfg.model_copy(update={"timeout_s": 5.0}), set_device=False) as lease:
        assert lease.index == 3
    assert (tmp_path / "gpu3.slot0.lock").read_text().strip() == str(os.getpid())


def test_config_from_env(tmp_path):
    env = {"GLIMPSE3D_GPUS": "0, 1", "CUDA_VISIBLE_DEVICES": "5,7", "GLIMPSE3D_GPU_SLOTS": "3",
           "GLIMPSE3D_GPU_LEASE_DIR": str(tmp_path)}
    cfg = GpuLeaseConfig.from_env(env)
    assert cfg.gpus == (0, 1) and cfg.host_ids == ("5", "7") and cfg.slots == 3 and cfg.total_slots == 6
    assert cfg.pool_size == 12  # two Dagster pool slots per lease slot
    assert cfg.lease_dir == tmp_path
    with pytest.raises(ValueError, match="CUDA_VISIBLE_DEVICES"):
        GpuLeaseConfig.from_env({**env, "GLIMPSE3D_GPUS": "2"})
    with pytest.raises(ValueError, match="comma-separated"):
        GpuLeaseConfig.from_env({**env, "GLIMPSE3D_GPUS": "cuda:0"})
    none = GpuLeaseConfig.from_env({"GLIMPSE3D_GPUS": "", "GLIMPSE3D_GPU_LEASE_DIR": str(tmp_path)})
    assert none.gpus == () and none.total_slots == 0 and none.pool_size == 1
    with pytest.raises(RuntimeError, match="no GPU to lease"), gpu_lease(none):
        pass


def test_default_slots_follow_memory():
    assert default_slots(None) == 1
    assert default_slots(24.0) == 1
    assert default_slots(79.6) == 1  # an 80 GB card: one SDXL enhance step (about 39 GiB) at a time
    assert default_slots(140.4) == 3  # an H200 (143771 MiB): 4 enhance steps would not fit
    assert default_slots(1000.0) == 4


def test_which_stages_take_a_gpu(empty_env):
    """On a CPU run none; on a CUDA run the rendering and fitting stages always, the others only with a model
    backend (the decision alone: nothing runs on the device here)."""
    from dataclasses import replace

    import torch

    from glimpse3d_assets.gpu import ALWAYS_GPU_STAGES, MODEL_GPU_STAGES, uses_gpu
    from glimpse3d_core.chain import Chain
    from glimpse3d_core.config import PipelineConfig

    stages = ALWAYS_GPU_STAGES | MODEL_GPU_STAGES | {"segment"}
    chain = Chain.prepare(PipelineConfig.from_dict({"preset": "quality", "device": "cpu"}))
    assert not any(uses_gpu(stage, chain) for stage in stages)
    on_cuda = Chain(chain.config, replace(chain.context, device=torch.device("cuda")), chain.selections)
    assert {stage for stage in stages if uses_gpu(stage, on_cuda)} == ALWAYS_GPU_STAGES  # weight-free: CPU code
    with_dpt = Chain.from_record(chain.config, {**on_cuda.selection_record(), "depth": {"name": "dpt"}},
                                 on_cuda.context)
    assert uses_gpu("depth", with_dpt) and not uses_gpu("reconstruct", with_dpt)
