"""What ``glimpse3d run`` / ``rerun`` do so that a killed run never blocks the next and finished work is not redone.

On start (:class:`Session`):

1. take the output folder's lock (``OUT/.glimpse3d/run.lock``); a second run on the same folder says who holds
   it and waits (the kernel releases the lock of a killed process);
2. mark the runs of processes that are gone as failed and free their pool slots
   (:func:`glimpse3d_assets.runs.reap_stale_runs`), in one line;
3. remove what killed processes left half-written: staging folders beside stored values and results
   (``.<name>.tmp-<hex>``; an ``.<name>.old-<hex>`` whose target is missing is put back), temporary files of
   :func:`glimpse3d_core.io.atomic.atomic_write`, and their private temporary folders
   (``$TMPDIR/glimpse3d-proc-<pid>-<start>``: every temporary file of a glimpse3d command lives in one).

Per job (:func:`plan`): the assets already materialised with the same fingerprint (photo bytes, configuration,
code version) are skipped; an interrupted partition restarts at its first asset that is not.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path

import psutil
import typer
from filelock import FileLock, Timeout

from glimpse3d_assets.runs import owner_tags, reap_stale_runs

LOCK_FILE = "run.lock"
HOLDER_FILE = "run.lock.json"
PROC_PREFIX = "glimpse3d-proc-"
STAGING = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-[0-9a-f]{32}$")
"""Staging names of :func:`glimpse3d_assets.io_manager.publish_folder`."""
ATOMIC_TMP = re.compile(r"^\..+\.tmp(\.[A-Za-z0-9]+)?$")
"""Temporary names of :func:`glimpse3d_core.io.atomic.atomic_write` (``.<stem>.<random>.tmp<suffix>``)."""


def _process_alive(pid: int, started: float) -> bool:
    try:
        return abs(psutil.Process(pid).create_time() - started) <= 1.0
    except psutil.NoSuchProcess:
        return False


def sweep_dead_scratch(tmp_root: Path) -> int:
    """Remove the private temporary folders of glimpse3d processes that are gone; returns how many."""
    removed = 0
    for path in tmp_root.glob(f"{PROC_PREFIX}*"):
        pid, _, started = path.name[len(PROC_PREFIX):].partition("-")
        if pid.isdigit() and started.isdigit() and not _process_alive(int(pid), int(started) / 100):
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


def use_private_tmp() -> Path:
    """Point this process's temporary files into its own folder (removed at exit, or by the next run if killed)."""
    me = psutil.Process()
    path = Path(tempfile.gettempdir()) / f"{PROC_PREFIX}{me.pid}-{round(me.create_time() * 100)}"
    path.mkdir(exist_ok=True)
    tempfile.tempdir = str(path)
    atexit.register(shutil.rmtree, path, True)
    return path


def sweep_partial(root: Path) -> int:
    """Remove half-written staging folders and temporary files under ``root`` (a local folder that only this
    process writes now: the lock is held); put back a replaced folder whose replacement never arrived."""
    if not root.is_dir():
        return 0
    removed = 0
    for path in sorted(root.rglob(".*"), key=lambda p: len(p.parts), reverse=True):
        match = STAGING.match(path.name)
        if match and match["kind"] == "old" and not (path.parent / match["name"]).exists():
            os.replace(path, path.parent / match["name"])
        elif match or (path.is_file() and ATOMIC_TMP.match(path.name)):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
            removed += 1
    return removed


class Session:
    """The lock on one output folder plus the clean-up after killed runs (see the module docstring). Released by
    :meth:`close` (the commands call it when they end) or when the process exits."""

    def __init__(self, state: Path, instance, local_roots: list[Path]) -> None:
        state.mkdir(parents=True, exist_ok=True)
        self.lock = FileLock(state / LOCK_FILE)
        self.holder_file = state / HOLDER_FILE
        try:
            self.lock.acquire(timeout=0)
        except Timeout:
            typer.echo(f"{state.parent} is in use by another glimpse3d command ({self._holder()}); waiting for it "
                       "to finish (Ctrl-C to stop)", err=True)
            self.lock.acquire()
        self.holder_file.write_text(json.dumps({**owner_tags(), "since": time.time()}))
        self.previous_tmp = tempfile.tempdir
        self.tmp = use_private_tmp()
        swept = sweep_dead_scratch(self.tmp.parent) + sum(sweep_partial(root) for root in local_roots)
        reaped = reap_stale_runs(instance)
        if reaped:
            typer.echo(f"marked {len(reaped)} interrupted run(s) failed and freed their pool slots (their process "
                       f"is gone): {'; '.join(map(str, reaped))}", err=True)
        if swept:
            typer.echo(f"removed {swept} temporary or half-written item(s) left by killed runs", err=True)

    def _holder(self) -> str:
        try:
            holder = json.loads(self.holder_file.read_text())
            held = time.time() - holder["since"]
            return f"pid {holder['glimpse3d/pid']} on {holder['glimpse3d/host']}, for {held:.0f} s"
        except (OSError, ValueError, KeyError):
            return f"on {socket.gethostname()}"

    def close(self) -> None:
        if self.lock.is_locked:
            self.holder_file.unlink(missing_ok=True)
            self.lock.release()
        shutil.rmtree(self.tmp, ignore_errors=True)
        tempfile.tempdir = self.previous_tmp


def plan(instance, assets: list[str], partition: str, fingerprint: str, storage, force: bool) -> list[str]:
    """The assets of a job (``assets`` in dependency order) to materialise for ``partition``: all with ``force``,
    else from the first one that is not up to date (:func:`glimpse3d_assets.runs.up_to_date`) on."""
    from glimpse3d_assets.runs import up_to_date

    if force:
        return list(assets)
    done = up_to_date(instance, assets, partition, fingerprint, storage)
    first = next((i for i, asset in enumerate(assets) if asset not in done), len(assets))
    return list(assets[first:])


def describe_slot_wait(instance, step_key: str, pool: str) -> str:
    """The line printed while ``step_key`` waits for a slot of ``pool``: who holds it and for how long. Runs
    whose process died meanwhile are reaped first (their slots freed, so the wait ends)."""
    from glimpse3d_assets.runs import slot_holders

    reaped = reap_stale_runs(instance)
    freed = f"; freed the slots of interrupted run(s): {'; '.join(map(str, reaped))}" if reaped else ""
    holders = "; ".join(slot_holders(instance, pool)) or "nobody now"
    return f"… {step_key} waits for a {pool!r} pool slot, held by {holders}{freed}"
