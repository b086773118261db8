"""Crash safety of runs: who owns a run, reaping runs whose process is gone, who holds a pool slot, and the
fingerprint that says a partition is up to date.

* **Owner.** Every run started by ``glimpse3d`` carries the tags ``glimpse3d/host``, ``glimpse3d/pid`` and
  ``glimpse3d/started`` (the process's start time, seconds since the epoch: a pid reused by a later process does
  not count as the owner).
* **Reaping.** :func:`reap_stale_runs` marks runs whose owner process is gone (same host, pid dead or reused) as
  failed and frees their concurrency-pool slots, then frees slots held by runs that have already ended. A run
  killed with SIGKILL can do neither itself, and Dagster's run monitoring that would do it needs the daemon,
  which ``glimpse3d run`` does not start. Runs owned by another host, or without owner tags (``dagster dev``,
  sensors), are left to their owner and to the daemon.
* **Fingerprint.** A run also carries ``glimpse3d/fingerprint``: a hash of the input photo's bytes, the stage
  configuration and the code version. A partition whose latest materialisation came from a run with the same
  fingerprint, and whose stored value is still there, is up to date (:func:`up_to_date`).
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

import psutil
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, DagsterRunStatus, RunsFilter
from upath import UPath

from glimpse3d_assets.io_manager import MANIFEST

HOST_TAG = "glimpse3d/host"
PID_TAG = "glimpse3d/pid"
STARTED_TAG = "glimpse3d/started"
FINGERPRINT_TAG = "glimpse3d/fingerprint"
START_TOLERANCE_S = 1.0
"""A process whose start time differs from the recorded one by more than this is another process (pid reused)."""
UNFINISHED = [DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED,
              DagsterRunStatus.CANCELING]


@cache
def owner_tags() -> dict[str, str]:
    """The owner tags of this process."""
    me = psutil.Process()
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(me.pid), STARTED_TAG: f"{me.create_time():.2f}"}


def owner_gone(tags: dict[str, str]) -> bool:
    """True when ``tags`` name an owner process on this host that no longer runs; False when it runs, or when
    nothing can be told (no owner tags, another host)."""
    if PID_TAG not in tags or tags.get(HOST_TAG) != socket.gethostname():
        return False
    try:
        started = psutil.Process(int(tags[PID_TAG])).create_time()
    except psutil.NoSuchProcess:
        return True
    return abs(started - float(tags.get(STARTED_TAG, started))) > START_TOLERANCE_S


def describe_owner(tags: dict[str, str]) -> str:
    return f"pid {tags[PID_TAG]} on {tags[HOST_TAG]}" if PID_TAG in tags else "owner unknown (no glimpse3d owner tags)"


@dataclass(frozen=True)
class ReapedRun:
    run_id: str
    job_name: str
    partition: str
    owner: str

    def __str__(self) -> str:
        return f"{self.job_name} {self.partition} (run {self.run_id[:8]}, {self.owner})"


def reap_stale_runs(instance: DagsterInstance) -> list[ReapedRun]:
    """Mark unfinished runs whose owner process is gone as failed and free their pool slots; free the slots that
    runs which have ended still hold. Returns the runs marked failed."""
    reaped = []
    for run in instance.get_runs(RunsFilter(statuses=UNFINISHED)):
        if not owner_gone(run.tags):
            continue
        owner = describe_owner(run.tags)
        instance.report_run_failed(run, message=f"the process that ran this run ({owner}) is gone: killed or "
                                                "crashed; marked failed by the next glimpse3d run")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        reaped.append(ReapedRun(run.run_id, run.job_name, run.tags.get("dagster/partition", ""), owner))
    storage = instance.event_log_storage
    for pool in storage.get_concurrency_keys():
        info = storage.get_concurrency_info(pool)
        for run_id in {s.run_id for s in info.claimed_slots} | {s.run_id for s in info.pending_steps}:
            run = instance.get_run_by_id(run_id)
            if run is None or run.is_finished:
                storage.free_concurrency_slots_for_run(run_id)
    return reaped


def slot_holders(instance: DagsterInstance, pool: str) -> list[str]:
    """Who holds the slots of ``pool``: job, partition, step, owner and for how long, one string each."""
    holders = []
    now = time.time()
    for slot in instance.event_log_storage.get_concurrency_info(pool).claimed_slots:
        run = instance.get_run_by_id(slot.run_id)
        if run is None:
            holders.append(f"run {slot.run_id[:8]} (deleted), step {slot.step_key}")
            continue
        stats = instance.get_run_step_stats(slot.run_id, step_keys=[slot.step_key])
        since = stats[0].start_time if stats and stats[0].start_time else None
        held = f", for {now - since:.0f} s" if since else ""
        holders.append(f"run {slot.run_id[:8]} ({run.job_name} {run.tags.get('dagster/partition', '')}, step "
                       f"{slot.step_key}, {describe_owner(run.tags)}{held})")
    return holders


def fingerprint(*parts: object) -> str:
    """A short stable hash of JSON-serialisable ``parts`` (input hashes, configurations, code version)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def up_to_date(instance: DagsterInstance, assets: Iterable[str], partition: str, fingerprint_: str,
               storage: UPath) -> set[str]:
    """The assets of ``assets`` whose latest materialisation of ``partition`` came from a run with fingerprint
    ``fingerprint_`` and whose stored value (``storage/<asset>/<partition>/manifest.json``) is still there."""
    done = set()
    for asset in assets:
        records = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[partition]), limit=1).records
        if not records:
            continue
        run = instance.get_run_by_id(records[0].run_id)
        if run is not None and run.tags.get(FINGERPRINT_TAG) == fingerprint_ and \
                (storage / asset / partition.replace("|", "/") / MANIFEST).exists():
            done.add(asset)
    return done
