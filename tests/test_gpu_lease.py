"""GPU leases on fake device lists: one holder per slot across processes, spread over GPUs, large steps on as many
slots as their memory needs, freed on failure and when the holder is SIGKILLed."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest
from dagster import (
    Definitions,
    asset,
    define_asset_job,
    in_process_executor,
    multiprocess_executor,
)

from glimpse3d_core.gpu_lease import (
    SLOT_GIB,
    GpuLeaseConfig,
    GpuLeaseTimeout,
    default_slots,
    gpu_lease,
)

MP = multiprocessing.get_context("fork")


def config(tmp_path: Path, gpus=(0, 1), slots: int = 1, timeout_s: float = 30.0,
           slot_gib: float | None = None) -> GpuLeaseConfig:
    return GpuLeaseConfig(gpus=gpus, host_ids=tuple(str(g) for g in gpus), slots=slots, slot_gib=slot_gib,
                          lease_dir=tmp_path, timeout_s=timeout_s, poll_s=0.005)


def _worker(cfg: GpuLeaseConfig, log: Path, rounds: int, gib: float = 0.0) -> None:
    with log.open("a") as f:
        for _ in range(rounds):
            with gpu_lease(cfg, gib=gib, set_device=False) as lease:
                start = time.monotonic()
                time.sleep(0.01)
                f.write(f"{lease.index} {','.join(map(str, lease.slots))} {start} {time.monotonic()}\n")
                f.flush()


def _holds(logs: list[Path]) -> list[tuple[int, tuple[str, ...], float, float]]:
    rows = []
    for log in logs:
        for line in log.read_text().splitlines():
            gpu, slots, start, end = line.split()
            rows.append((int(gpu), tuple(slots.split(",")), float(start), float(end)))
    return rows


def test_never_two_holders_of_one_gpu_across_processes(tmp_path):
    cfg = config(tmp_path / "locks")
    procs = [MP.Process(target=_worker, args=(cfg, tmp_path / f"log{i}", 8)) for i in range(5)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    holds: dict[int, list[tuple[float, float]]] = {}
    for gpu, slots, start, end in _holds([tmp_path / f"log{i}" for i in range(5)]):
        assert slots == ("0",)
        holds.setdefault(gpu, []).append((start, end))
    assert sum(len(v) for v in holds.values()) == 40
    assert set(holds) == {0, 1}  # both GPUs served
    for intervals in holds.values():
        intervals.sort()
        for (_, end), (next_start, _) in itertools.pairwise(intervals):
            assert next_start >= end  # the next holder started after the last one let go


def test_slots_spread_over_gpus_then_share(tmp_path):
    cfg = config(tmp_path, gpus=(0, 1), slots=2, timeout_s=0.05)
    with gpu_lease(cfg, set_device=False) as a, gpu_lease(cfg, set_device=False) as b:
        assert {(a.index, a.slots), (b.index, b.slots)} == {(0, (0,)), (1, (0,))}
        with gpu_lease(cfg, set_device=False) as c, gpu_lease(cfg, set_device=False) as d:
            assert {(c.index, c.slots), (d.index, d.slots)} == {(0, (1,)), (1, (1,))}
            with pytest.raises(GpuLeaseTimeout, match="had 1 free slot"), gpu_lease(cfg, set_device=False):
                pass
    assert a.device == "cuda:0" and a.metadata()["gpu"] == 0


def test_slots_follow_the_step_memory():
    h200 = GpuLeaseConfig(gpus=(0,), host_ids=("0",), slots=4, slot_gib=140.4 / 4, lease_dir=Path("/tmp"))
    assert [h200.slots_for(g) for g in (0.0, 0.2, 35.1, 40.0, 75.0, 500.0)] == [1, 1, 1, 2, 3, 4]
    a100 = h200.model_copy(update={"slots": 2, "slot_gib": 79.6 / 2})
    assert a100.slots_for(40.0) == 2  # the SDXL enhance step has an 80 GB card to itself
    assert h200.model_copy(update={"slot_gib": None}).slots_for(40.0) == 1  # memory unknown: one slot


def test_a_large_step_takes_several_slots_of_one_gpu(tmp_path):
    cfg = config(tmp_path, gpus=(0, 1), slots=2, timeout_s=0.05, slot_gib=35.0)
    with gpu_lease(cfg, set_device=False) as small_0, gpu_lease(cfg, set_device=False) as small_1:
        assert {small_0.index, small_1.index} == {0, 1}  # spread: one slot left on each GPU
        with pytest.raises(GpuLeaseTimeout, match="had 2 free slot"), gpu_lease(cfg, gib=40.0, set_device=False):
            pass  # neither GPU has two free slots
    with gpu_lease(cfg, gib=40.0, set_device=False) as big:
        assert big.slots == (0, 1) and big.metadata()["gpu_slots"] == "0,1"
        with gpu_lease(cfg, set_device=False) as small:
            assert small.index != big.index
        with gpu_lease(cfg, gib=40.0, set_device=False) as other:
            assert other.index != big.index and other.slots == (0, 1)
            with pytest.raises(GpuLeaseTimeout), gpu_lease(cfg, set_device=False):
                pass  # every slot of both GPUs is held


def test_mixed_steps_never_hold_more_slots_than_a_gpu_has(tmp_path):
    """Small (1 slot) and large (2 slots) steps from 6 processes on one GPU of 4 slots: at every moment the held
    slots are distinct, so at most 4 slot-units are in use."""
    cfg = config(tmp_path / "locks", gpus=(0,), slots=4, slot_gib=35.0)
    gibs = [0.0, 0.0, 0.0, 40.0, 40.0, 0.0]
    procs = [MP.Process(target=_worker, args=(cfg, tmp_path / f"log{i}", 6, gib)) for i, gib in enumerate(gibs)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    rows = _holds([tmp_path / f"log{i}" for i in range(len(gibs))])
    assert len(rows) == 36 and {len(slots) for _, slots, _, _ in rows} == {1, 2}
    for (_, slots_a, start_a, end_a), (_, slots_b, start_b, end_b) in itertools.combinations(rows, 2):
        if start_a < end_b and start_b < end_a:  # held at the same time
            assert not set(slots_a) & set(slots_b)


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
    assert cfg.slot_gib is None or cfg.slot_gib > 0  # GPU memory / slots where nvidia-smi reads it
    assert cfg.pool_size == 12  # two Dagster pool slots per lease slot
    assert cfg.lease_dir == tmp_path
    with pytest.raises(ValueError, match="CUDA_VISIBLE_DEVICES"):
        GpuLeaseConfig.from_env({**env, "GLIMPSE3D_GPUS": "2"})
    with pytest.raises(ValueError, match="comma-separated"):
        GpuLeaseConfig.from_env({**env, "GLIMPSE3D_GPUS": "cuda:0"})
    for bad in ("two", "0", "1.5"):
        with pytest.raises(ValueError, match=r"GLIMPSE3D_GPU_SLOTS.*whole number"):
            GpuLeaseConfig.from_env({**env, "GLIMPSE3D_GPU_SLOTS": bad})
    none = GpuLeaseConfig.from_env({"GLIMPSE3D_GPUS": "", "GLIMPSE3D_GPU_LEASE_DIR": str(tmp_path)})
    assert none.gpus == () and none.total_slots == 0 and none.pool_size == 1
    with pytest.raises(RuntimeError, match="no GPU to lease"), gpu_lease(none):
        pass


def test_default_slots_follow_memory():
    assert default_slots(None) == 1
    assert default_slots(24.0) == 1
    assert default_slots(48.0) == 2
    assert default_slots(79.6) == 3  # an 80 GB card
    assert default_slots(140.4) == 6  # an H200 (143771 MiB): six chains at once, the best measured
    assert default_slots(1000.0) == 6


def test_which_stages_take_a_gpu(empty_env):
    """On a CPU run none; on a CUDA run the rendering and fitting stages always, the others only with a model
    backend; SDXL's step declares its memory, one default slot (the decisions alone: nothing runs on the device
    here)."""
    from dataclasses import replace

    import torch

    from glimpse3d_assets.gpu import ALWAYS_GPU_STAGES, MODEL_GPU_STAGES, step_gib, uses_gpu
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
    with_sdxl = Chain.from_record(chain.config, {**on_cuda.selection_record(), "enhance": {"name": "sdxl-lightning"}},
                                  on_cuda.context)
    assert 0.0 < step_gib("enhance", with_sdxl) <= SLOT_GIB
    assert step_gib("depth", with_dpt) == step_gib("optimize", with_sdxl) == 0.0  # one slot


def test_cpu_threads_are_held_for_the_block_and_put_back():
    """torch's threads and every OpenMP / BLAS pool threadpoolctl sees are at n inside, as before after (also after
    an exception)."""
    import torch
    from threadpoolctl import threadpool_info

    from glimpse3d_core.threads import cpu_threads

    before = torch.get_num_threads(), [p["num_threads"] for p in threadpool_info()]
    with cpu_threads(1):
        assert torch.get_num_threads() == 1
        assert all(p["num_threads"] == 1 for p in threadpool_info())
    assert (torch.get_num_threads(), [p["num_threads"] for p in threadpool_info()]) == before
    with pytest.raises(RuntimeError, match="inside"), cpu_threads(1):
        raise RuntimeError("inside")
    assert (torch.get_num_threads(), [p["num_threads"] for p in threadpool_info()]) == before
    with pytest.raises(ValueError, match="at least one"), cpu_threads(0):
        pass


def test_a_leased_step_takes_its_slots_share_of_the_cores(tmp_path):
    """Two GPUs of 4 slots (8 steps at once) on 16 cores: a 1-slot step gets 2 threads, a 2-slot step 4, and
    on 2 cores each at least 1; a run that executes one step at a time leaves the pools alone."""
    from glimpse3d_assets.gpu import step_cpu_threads

    cfg = config(tmp_path, slots=4, slot_gib=35.0)
    with gpu_lease(cfg, set_device=False) as small, gpu_lease(cfg, gib=40.0, set_device=False) as large:
        assert (len(small.slots), len(large.slots)) == (1, 2)
        assert step_cpu_threads("multiprocess", small, cfg, 16) == 2
        assert step_cpu_threads("celery", large, cfg, 16) == 4
        assert step_cpu_threads("multiprocess", small, cfg, 2) == step_cpu_threads("k8s", large, cfg, 2) == 1
        assert step_cpu_threads("in_process", large, cfg, 16) is None


def test_executor_names_that_run_one_step_at_a_time():
    """What ``execute_in_process`` (``glimpse3d run``) reports as a step's executor is one of ONE_STEP_AT_A_TIME
    (a private Dagster name: this fails when it changes), the multiprocess executor is not."""
    from glimpse3d_assets.gpu import ONE_STEP_AT_A_TIME

    seen = []

    @asset
    def probe(context):
        seen.append(context.job_def.executor_def.name)
        return 1

    defs = Definitions(assets=[probe], jobs=[define_asset_job("probe_job", selection=[probe])],
                       executor=multiprocess_executor)
    assert defs.resolve_job_def("probe_job").execute_in_process().success
    assert seen and seen[0] in ONE_STEP_AT_A_TIME
    assert in_process_executor.name in ONE_STEP_AT_A_TIME
    assert multiprocess_executor.name not in ONE_STEP_AT_A_TIME
