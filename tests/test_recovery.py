"""Recovery from killed runs on a real Dagster instance (SQLite): reaping, the slot wait, the output-folder lock."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid

import pytest
from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, Definitions, asset, define_asset_job
from dagster._core.execution.plan import active
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext

from glimpse3d_assets.package_data import INSTANCE_FILE, instance_yaml
from glimpse3d_assets.runs import HOST_TAG, PID_TAG, STARTED_TAG, owner_tags, reap_stale_runs
from glimpse3d_assets.slot_wait import install
from glimpse3d_cli.recovery import Session, sweep_partial
from glimpse3d_cli.run import _progress_logger

POOL = "gpu"


@pytest.fixture
def instance(tmp_path):
    home = tmp_path / "dagster"
    home.mkdir()
    (home / INSTANCE_FILE).write_text(instance_yaml())  # the packaged instance defaults, as glimpse3d run does
    instance = DagsterInstance.from_config(str(home))
    instance.event_log_storage.set_concurrency_slots(POOL, 1)
    yield instance
    instance.dispose()


def holder_run(instance, tags: dict[str, str], step: str = "optimized_gaussians") -> str:
    """A started run of ``tags``' owner holding the pool's one slot."""
    run_id = str(uuid.uuid4())
    instance.add_run(DagsterRun(job_name="variant_stages", run_id=run_id, status=DagsterRunStatus.STARTED,
                                tags={**tags, "dagster/partition": "photo|default"}))
    assert instance.event_log_storage.claim_concurrency_slot(POOL, run_id, step).is_claimed
    return run_id


def process_tags(proc: subprocess.Popen) -> dict[str, str]:
    import psutil

    return {**owner_tags(), PID_TAG: str(proc.pid), STARTED_TAG: f"{psutil.Process(proc.pid).create_time():.2f}"}


def test_reaping_fails_runs_of_dead_processes_only(instance):
    instance.event_log_storage.set_concurrency_slots(POOL, 4)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        alive = holder_run(instance, process_tags(sleeper))
        dead_proc = subprocess.Popen([sys.executable, "-c", "pass"])
        dead_tags = process_tags(dead_proc)
        dead_proc.wait()
        dead = holder_run(instance, dead_tags, step="depth")
        other_host = holder_run(instance, {**dead_tags, HOST_TAG: "another-host"}, step="multiview")
        untagged = holder_run(instance, {}, step="exports")
        reaped = reap_stale_runs(instance)
        assert [r.run_id for r in reaped] == [dead]
        assert instance.get_run_by_id(dead).status == DagsterRunStatus.FAILURE
        for run_id in (alive, other_host, untagged):
            assert instance.get_run_by_id(run_id).status == DagsterRunStatus.STARTED
        claimed = {s.run_id for s in instance.event_log_storage.get_concurrency_info(POOL).claimed_slots}
        assert dead not in claimed and alive in claimed
    finally:
        sleeper.kill()
        sleeper.wait()


@asset(pool=POOL)
def on_gpu() -> int:
    return 1


def test_step_waiting_for_a_slot_sleeps_reports_the_holder_and_goes_on_once_it_dies(instance, capsys, monkeypatch):
    install()
    monkeypatch.setattr(active, "CONCURRENCY_CLAIM_MESSAGE_INTERVAL", 2.0)  # 30 s in production
    claims = []  # every claim attempt: one per turn of the executor's loop while the step waits
    claim = InstanceConcurrencyContext.claim
    monkeypatch.setattr(InstanceConcurrencyContext, "claim", lambda self, *a, **k: claims.append(1) or claim(
        self, *a, **k))
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    held_by = holder_run(instance, process_tags(holder))
    result = {}
    job = Definitions(assets=[on_gpu], jobs=[define_asset_job("waits", selection=[on_gpu])]).resolve_job_def(
        "waits").with_logger_defs({"progress": _progress_logger("photo", instance)})

    def run_job():
        result["run"] = job.execute_in_process(instance=instance, tags=owner_tags(), raise_on_error=False,
                                               run_config={"loggers": {"progress": {}}})

    thread = threading.Thread(target=run_job)
    thread.start()
    deadline = time.monotonic() + 120
    while not claims and time.monotonic() < deadline:  # until the step asks for its slot
        time.sleep(0.1)
    cpu, wall, first = time.process_time(), time.monotonic(), len(claims)
    time.sleep(6)
    waited_cpu, waited, turns = time.process_time() - cpu, time.monotonic() - wall, len(claims) - first
    assert thread.is_alive()  # still waiting for the slot
    holder.kill()
    holder.wait()
    thread.join(timeout=120)
    assert not thread.is_alive() and result["run"].success
    # Dagster's back-off retries a claim after 1, 2, 3, 5, 9 s: a handful of turns, not a spinning loop
    assert turns <= 10 and waited_cpu < 0.3 * waited, f"{turns} turns, {waited_cpu:.1f} s CPU in {waited:.1f} s"
    err = capsys.readouterr().err
    assert f"on_gpu waits for a 'gpu' pool slot, held by run {held_by[:8]} (variant_stages photo|default, " \
           f"step optimized_gaussians, pid {holder.pid} on" in err
    assert err.count("waits for a 'gpu' pool slot") >= 2
    assert f"freed the slots of interrupted run(s): variant_stages photo|default (run {held_by[:8]}" in err
    assert instance.get_run_by_id(held_by).status == DagsterRunStatus.FAILURE


def test_a_second_command_on_one_output_folder_waits_for_the_first(instance, tmp_path, capsys):
    state = tmp_path / "out" / ".glimpse3d"
    first = Session(state, instance, [])
    second: list[Session] = []
    thread = threading.Thread(target=lambda: second.append(Session(state, instance, [])))
    thread.start()
    time.sleep(1.0)
    assert thread.is_alive() and not second  # queued behind the lock
    first.close()
    thread.join(timeout=30)
    assert second and not thread.is_alive()
    second[0].close()
    err = capsys.readouterr().err
    assert f"{tmp_path / 'out'} is in use by another glimpse3d command (pid " in err and "waiting for it" in err


def test_sweep_removes_staging_and_puts_back_an_orphaned_old_folder(tmp_path):
    store = tmp_path / "storage" / "coarse_mesh"
    (store / f".chair.tmp-{'a' * 32}").mkdir(parents=True)
    (store / f".chair.tmp-{'a' * 32}" / "value.ply").write_bytes(b"half")
    (store / f".ghost.old-{'b' * 32}").mkdir()
    (store / f".ghost.old-{'b' * 32}" / "manifest.json").write_text("{}")
    (store / "cactus").mkdir()
    (store / "cactus" / ".error.x1y2z3.tmp.json").write_text("{")
    (store / "cactus" / "manifest.json").write_text("{}")
    assert sweep_partial(tmp_path) == 2
    assert sorted(p.relative_to(store).as_posix() for p in store.rglob("*")) == [
        "cactus", "cactus/manifest.json", "ghost", "ghost/manifest.json"]
