"""The lost-worker watch around dagster-celery's executor: the ONE module that uses dagster-celery internals.

dagster-celery has no public hook for what happens to a submitted step, and a step whose worker dies is never
answered (the task left the queue), so its run would wait forever. The watch wraps each submitted step's Celery
result (:class:`_WatchedResult`) and fails it, naming the worker, once that worker has not answered a ping for
``worker_lost_after_s`` seconds; the step's ``gpu`` pool slot is freed, since the dead worker cannot free it.

Private names used, all of dagster-celery ``PINNED_DAGSTER_CELERY`` (pyproject pins it): ``dagster_celery.executor``'s
``CeleryExecutor`` (subclassed), ``CELERY_CONFIG`` (its config schema, extended) and ``_submit_task`` (wrapped), and
``dagster_celery.core_execution_loop.core_celery_execution_loop``. tests/test_celery_watch.py checks the pinned
version and their signatures, so an upgrade that changes them fails loudly there. The executor itself is built by
dagster-celery's public ``celery_executor`` definition (its retries setting included) and only then wrapped.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from dagster import Field, executor, multiple_process_executor_requirements
from dagster_celery import celery_executor
from dagster_celery.core_execution_loop import core_celery_execution_loop
from dagster_celery.executor import CELERY_CONFIG, CeleryExecutor, _submit_task

PINNED_DAGSTER_CELERY = "0.29.27"
DEFAULT_WORKER_LOST_AFTER_S = 20.0
"""A step whose Celery worker has not answered a ping for this long counts as lost (its run fails)."""
PING_INTERVAL_S = 2.0
PING_TIMEOUT_S = 1.0


class WorkerLost(RuntimeError):
    """The Celery worker running a step stopped answering (killed, crashed, machine gone)."""


class _WatchedResult:
    """A step's Celery AsyncResult that also becomes ready, with :class:`WorkerLost`, once the worker that
    started the step has not answered a ping for ``lost_after_s`` seconds. Without it a run whose worker died
    waits forever: the task was taken off the queue and no result will come."""

    def __init__(self, app, result, step_key: str, lost_after_s: float, on_lost: Callable[[], None]) -> None:
        self._app, self._result, self._step_key, self._lost_after_s = app, result, step_key, lost_after_s
        self._on_lost = on_lost
        self._next_check = time.monotonic() + PING_INTERVAL_S
        self._silent_since: float | None = None
        self._lost: str | None = None

    def ready(self) -> bool:
        if self._lost or self._result.ready():
            return True
        now = time.monotonic()
        if now < self._next_check:
            return False
        self._next_check = now + PING_INTERVAL_S
        info = self._result.info if self._result.state == "STARTED" else None
        worker = info.get("hostname") if isinstance(info, dict) else None
        if worker is None or self._app.control.ping(destination=[worker], timeout=PING_TIMEOUT_S):
            self._silent_since = None  # queued (waiting for a worker is no failure) or the worker answered
            return False
        self._silent_since = self._silent_since or now
        if now - self._silent_since >= self._lost_after_s:
            self._lost = worker
            self._on_lost()
        return self._lost is not None

    def get(self):
        if self._lost:
            raise WorkerLost(f"celery worker {self._lost} running step {self._step_key!r} stopped answering for "
                             f"{self._lost_after_s:.0f} s (killed or crashed); re-execute the run from failure "
                             "once a worker serves its queue again")
        return self._result.get()

    def revoke(self) -> None:
        self._result.revoke()


class WatchedCeleryExecutor(CeleryExecutor):
    """dagster-celery's executor, with each submitted step watched for a lost worker (``_WatchedResult``); a lost
    step's concurrency-pool slot (``gpu``) is freed, since the dead worker cannot free it."""

    def __init__(self, *args, worker_lost_after_s: float = DEFAULT_WORKER_LOST_AFTER_S, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.worker_lost_after_s = worker_lost_after_s

    def execute(self, plan_context, execution_plan):
        def submit(app, context, step, queue, priority, known_state):
            result = _submit_task(app, context, step, queue, priority, known_state)
            run_id = context.dagster_run.run_id

            def free_slot() -> None:
                context.instance.event_log_storage.free_concurrency_slot_for_step(run_id, step.key)

            return _WatchedResult(app, result, step.key, self.worker_lost_after_s, free_slot)

        return core_celery_execution_loop(plan_context, execution_plan, step_execution_fn=submit)


@executor(
    name="celery",
    config_schema={**CELERY_CONFIG, "worker_lost_after_s": Field(
        float, default_value=DEFAULT_WORKER_LOST_AFTER_S,
        description="seconds without an answer from a step's worker before the step fails as lost")},
    requirements=multiple_process_executor_requirements(),
)
def watched_celery_executor(init_context) -> WatchedCeleryExecutor:
    """dagster-celery's ``celery_executor`` (same config) plus ``worker_lost_after_s``."""
    config = init_context.executor_config
    base = celery_executor.executor_creation_fn(init_context)  # dagster-celery's own, from the same config
    return WatchedCeleryExecutor(
        retries=base.retries, broker=base.broker, backend=base.backend, include=base.include,
        config_source=config.get("config_source"), worker_lost_after_s=config["worker_lost_after_s"],
    )
