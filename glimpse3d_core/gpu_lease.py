"""GPU leases: each GPU step holds one or more slots of one of the host's GPUs for as long as it runs.

A slot is an exclusive ``flock`` on ``<lease_dir>/gpu<ID>.slot<S>.lock``, taken without blocking. A step takes as
many slots of one GPU as its memory needs (``gib``: :attr:`GpuLeaseConfig.slot_gib` per slot; a small step, the
default, takes one), so several steps share a large GPU (an H200 has six slots: six steps at once, SDXL enhance
steps included). Slots are tried slot 0 of every GPU first, then slot 1 of
every GPU, and so on, so steps spread over the GPUs before they share one; the first GPU where the step holds
enough slots wins and the others' are let go at once. The kernel drops the locks when the holding process exits,
however it exits (exception, SIGKILL, out of memory), so a dead step never keeps a GPU and no stale state is left
to clean up. The lock files themselves stay (deleting them would race with a process opening them); each holds
the holder's pid for people looking.

Which GPUs: ``GLIMPSE3D_GPUS`` (comma-separated CUDA device indices as this process numbers them, e.g. ``0,1``;
empty means none), else every device torch sees. ``<ID>`` in the lock name is the host-wide id, so processes
that see different subsets agree: the matching ``CUDA_VISIBLE_DEVICES`` entry where that is set (a Celery gpu
worker pinned with ``--gpu 1`` sees its GPU as ``cuda:0`` and locks ``gpu1``), else the index itself.
Slots per GPU: ``GLIMPSE3D_GPU_SLOTS``, else :func:`default_slots` of the GPU's memory. Folder:
``GLIMPSE3D_GPU_LEASE_DIR`` (default ``<tmp>/glimpse3d-gpu-leases``; one per host, since flock does not cross
machines). A step waits at most ``GLIMPSE3D_GPU_LEASE_TIMEOUT_S`` (default 6 h).
"""

from __future__ import annotations

import fcntl
import math
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

GPUS_ENV = "GLIMPSE3D_GPUS"
SLOTS_ENV = "GLIMPSE3D_GPU_SLOTS"
LEASE_DIR_ENV = "GLIMPSE3D_GPU_LEASE_DIR"
TIMEOUT_ENV = "GLIMPSE3D_GPU_LEASE_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 6 * 3600.0
SLOT_GIB = 23.0
"""GPU memory per default slot: a GPU of M GiB has floor(M / SLOT_GIB) slots (1 to MAX_SLOTS): an H200 (140 GiB)
6, an 80 GB card 3, a 48 GB card 2. On an H200 the learned chain fills the GPU best with six processes: 267.8
images/hour against 242.1 with four, 390.6 under NVIDIA MPS (research/bench_learned_chain.py,
research/results/gpu_speed.md, "Sixth round"); a chain process that holds every model peaks at 17.6 GiB. A step
larger than a slot takes the slots its memory needs (``gib``:
:attr:`glimpse3d_core.backends.base.Backend.gpu_gib`; SDXL-Lightning + ControlNet enhance declares 13 GiB, one
slot)."""
MAX_SLOTS = 6


class GpuLeaseTimeout(TimeoutError):
    """No GPU slot became free within the lease timeout."""


class GpuLeaseConfig(BaseModel):
    """The host's GPUs a step may lease, slots per GPU, where the locks live and how long a step waits."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gpus: tuple[int, ...] = Field(description="CUDA device indices (as this process numbers them)")
    host_ids: tuple[str, ...] = Field(description="host-wide id of each of ``gpus`` (names the lock files)")
    slots: int = Field(1, ge=1, description="slots per GPU: small steps at once on one GPU")
    slot_gib: float | None = Field(None, gt=0, description="GPU memory per slot (GiB; None: unknown, every step "
                                   "takes one slot)")
    lease_dir: Path = Field(description="folder of the lock files (one per host)")
    timeout_s: float = Field(DEFAULT_TIMEOUT_S, gt=0, description="longest wait for a free slot")
    poll_s: float = Field(0.05, gt=0, description="seconds between tries while every slot is taken")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GpuLeaseConfig:
        """The lease settings of ``env`` (default ``os.environ``), GPUs detected where ``GLIMPSE3D_GPUS`` is unset."""
        env = os.environ if env is None else env
        listed = env.get(GPUS_ENV)
        if listed is None:
            gpus = tuple(range(detect_gpu_count()))
        else:
            try:
                gpus = tuple(int(x) for x in listed.replace(" ", "").split(",") if x)
            except ValueError:
                raise ValueError(f"{GPUS_ENV}={listed!r}: expected comma-separated GPU indices, e.g. 0,1") from None
        memory = gpu_memory_gib(gpus)
        listed_slots = env.get(SLOTS_ENV)
        if listed_slots and not (listed_slots.strip().isdigit() and int(listed_slots) >= 1):
            raise ValueError(f"{SLOTS_ENV}={listed_slots!r}: expected a whole number of slots per GPU, at least 1")
        slots = int(listed_slots or default_slots(memory))
        return cls(gpus=gpus, host_ids=host_ids(gpus, env.get("CUDA_VISIBLE_DEVICES")), slots=slots,
                   slot_gib=memory / slots if memory else None,
                   lease_dir=Path(env.get(LEASE_DIR_ENV) or Path(tempfile.gettempdir()) / "glimpse3d-gpu-leases"),
                   timeout_s=float(env.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT_S))

    def slots_for(self, gib: float) -> int:
        """Slots of one GPU a step needing ``gib`` GiB takes: enough for its memory, at least 1, at most all."""
        if gib <= 0 or self.slot_gib is None:
            return 1
        return min(self.slots, max(1, math.ceil(gib / self.slot_gib - 1e-9)))

    @property
    def total_slots(self) -> int:
        """GPU steps this host runs at once."""
        return len(self.gpus) * self.slots

    def cpu_share(self, slots: int, cores: int) -> int:
        """CPU threads for a step that holds ``slots`` of the host's :attr:`total_slots`, when a step holds every
        slot (a batch that fills the GPUs): its slots' share of ``cores``, at least 1."""
        return max(1, cores * slots // self.total_slots)

    @property
    def pool_size(self) -> int:
        """Size of the Dagster ``gpu`` pool: two per lease slot, at least 1. Dagster claims a step's pool slot
        before the step's process starts (about 10 s of imports under the multiprocess executor), so the second
        one lets the next GPU step start up while the current one runs, and it then waits for the lease; the
        lease, not the pool, keeps two steps off one slot."""
        return max(1, 2 * self.total_slots)


@dataclass(frozen=True)
class GpuLease:
    """Held slots: CUDA device ``index`` (this process's numbering), its host-wide id, the slots, the wait."""

    index: int
    host_id: str
    slots: tuple[int, ...]
    waited_s: float

    @property
    def device(self) -> str:
        return f"cuda:{self.index}"

    def metadata(self) -> dict[str, int | str | float]:
        """What a step records about its GPU (Dagster materialisation metadata)."""
        return {"gpu": self.index, "gpu_host_id": self.host_id, "gpu_slots": ",".join(map(str, self.slots)),
                "gpu_wait_s": round(self.waited_s, 3)}


def detect_gpu_count() -> int:
    """CUDA devices torch sees (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def host_ids(gpus: tuple[int, ...], visible: str | None) -> tuple[str, ...]:
    """Host-wide id of each device index: its ``CUDA_VISIBLE_DEVICES`` entry where that is set, else the index."""
    entries = [e.strip() for e in visible.split(",") if e.strip()] if visible else []
    if entries and max(gpus, default=-1) >= len(entries):
        raise ValueError(f"{GPUS_ENV} lists GPU {max(gpus)}, but CUDA_VISIBLE_DEVICES={visible!r} shows "
                         f"{len(entries)} GPU(s)")
    return tuple(entries[i] if entries else str(i) for i in gpus)


def gpu_memory_gib(gpus: tuple[int, ...]) -> float | None:
    """The smallest memory of ``gpus`` in GiB, read with nvidia-smi (no CUDA context is created); None when it
    cannot be read (no GPU, no nvidia-smi)."""
    if not gpus:
        return None
    try:
        text = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    mib = [float(line) for line in text.split() if line.strip()]
    return min(mib) / 1024 if mib else None


def default_slots(memory_gib: float | None) -> int:
    """Steps at once on a GPU of ``memory_gib`` (see :data:`SLOT_GIB`); 1 when unknown."""
    if memory_gib is None:
        return 1
    return int(min(MAX_SLOTS, max(1, memory_gib // SLOT_GIB)))


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _unlock(fds: list[int]) -> None:
    for fd in fds:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _take(config: GpuLeaseConfig, need: int) -> tuple[int, dict[int, int]] | None:
    """One try (no waiting): (GPU position in ``config.gpus``, {slot: fd}) of ``need`` slots of one GPU, or None."""
    held: list[dict[int, int]] = [{} for _ in config.gpus]
    for slot in range(config.slots):
        for i in range(len(config.gpus)):
            fd = _try_lock(config.lease_dir / f"gpu{config.host_ids[i]}.slot{slot}.lock")
            if fd is None:
                continue
            held[i][slot] = fd
            if len(held[i]) == need:
                _unlock([f for j, h in enumerate(held) if j != i for f in h.values()])
                return i, held[i]
    _unlock([f for h in held for f in h.values()])
    return None


@contextmanager
def gpu_lease(config: GpuLeaseConfig | None = None, *, gib: float = 0.0,
              set_device: bool = True) -> Iterator[GpuLease]:
    """Hold :meth:`GpuLeaseConfig.slots_for` ``gib`` free slots of one GPU while the block runs (waiting while none
    has them); with ``set_device`` and CUDA present the leased GPU becomes torch's current device. Released when
    the block ends, also by an exception, and by the kernel when the process dies."""
    config = config or GpuLeaseConfig.from_env()
    if not config.gpus:
        raise RuntimeError(f"a GPU step found no GPU to lease (none detected, or {GPUS_ENV} is empty)")
    config.lease_dir.mkdir(parents=True, exist_ok=True)
    need = config.slots_for(gib)
    start = time.monotonic()
    while (taken := _take(config, need)) is None:
        if time.monotonic() - start > config.timeout_s:
            raise GpuLeaseTimeout(f"no GPU of {config.gpus} had {need} free slot(s) within {config.timeout_s:.0f} s "
                                  f"(locks in {config.lease_dir})")
        time.sleep(config.poll_s)
    i, fds = taken
    lease = GpuLease(index=config.gpus[i], host_id=config.host_ids[i], slots=tuple(sorted(fds)),
                     waited_s=time.monotonic() - start)
    try:
        if set_device:
            import torch

            if torch.cuda.is_available():
                torch.cuda.set_device(lease.index)
        yield lease
    finally:
        _unlock(list(fds.values()))
