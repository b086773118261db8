"""The lost-worker watch is the one place that uses dagster-celery internals: this fails loudly, naming what
changed, when the pinned release (or the private names the watch relies on) changes."""

from __future__ import annotations

import inspect
from importlib import metadata

import dagster_celery.core_execution_loop as core_execution_loop
import dagster_celery.executor as celery_executor_module

from glimpse3d_assets.celery_watch import PINNED_DAGSTER_CELERY, WatchedCeleryExecutor, watched_celery_executor


def _parameters(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


def test_pinned_dagster_celery_release():
    assert metadata.version("dagster-celery") == PINNED_DAGSTER_CELERY, (
        "dagster-celery changed: re-check glimpse3d_assets/celery_watch.py against its executor and update the pin")


def test_private_names_the_watch_uses_keep_their_shape():
    assert _parameters(celery_executor_module._submit_task) == [
        "app", "plan_context", "step", "queue", "priority", "known_state"]
    assert _parameters(core_execution_loop.core_celery_execution_loop) == [
        "job_context", "execution_plan", "step_execution_fn"]
    assert _parameters(celery_executor_module.CeleryExecutor.__init__) == [
        "self", "retries", "broker", "backend", "include", "config_source"]
    assert {"broker", "backend", "include", "config_source", "retries"} <= set(celery_executor_module.CELERY_CONFIG)
    assert issubclass(WatchedCeleryExecutor, celery_executor_module.CeleryExecutor)


def test_watched_executor_takes_celery_config_plus_lost_after():
    """(Building it and losing a worker for real: tests/test_celery.py, with Redis and Celery workers.)"""
    from dagster import DagsterInvalidConfigError, job, op, validate_run_config

    @op
    def noop() -> None:
        pass

    @job(executor_def=watched_celery_executor)
    def one_step():
        noop()

    config = {"broker": "redis://127.0.0.1:6379/0", "worker_lost_after_s": 3.0, "retries": {"disabled": {}}}
    resolved = validate_run_config(one_step, {"execution": {"config": config}})
    assert resolved["execution"]["celery"]["worker_lost_after_s"] == 3.0
    assert resolved["execution"]["celery"]["retries"] == {"disabled": {}}
    try:
        validate_run_config(one_step, {"execution": {"config": {"worker_lost_after": 3.0}}})
    except DagsterInvalidConfigError as exc:
        assert "worker_lost_after" in str(exc)
    else:
        raise AssertionError("an unknown executor field must be refused")
