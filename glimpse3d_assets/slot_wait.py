"""A step waiting for a concurrency-pool slot sleeps, and says so every 30 s: the one private use of Dagster's
step-slot wait, kept here (``tests/test_recovery.py`` fails loudly when Dagster changes it).

Dagster 1.13's ``InstanceConcurrencyContext.interval_to_next_pending_claim_check`` returns
``min([0, *time_to_each_next_check])``, which is never above 0, so ``ActiveExecution.sleep_til_ready`` never
sleeps: a step blocked on a pool spins the executor's loop at 100% of a core until a slot frees (for a slot held
by a killed run: forever). :func:`install` replaces it with the time to the earliest next claim check (Dagster's
own back-off, 1 s growing to 15 s), and shortens the "step blocked by limit for pool" engine event from every
300 s to every :data:`REPORT_INTERVAL_S` (``GLIMPSE3D_SLOT_REPORT_S``), which ``glimpse3d run`` prints with the
holder of the slot.
"""

from __future__ import annotations

import os
import time

from dagster._core.execution.plan import active
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext

REPORT_ENV = "GLIMPSE3D_SLOT_REPORT_S"
REPORT_INTERVAL_S = float(os.environ.get(REPORT_ENV) or 30)
"""Seconds between two "still waiting for a slot" events of one step."""


def _interval_to_next_pending_claim_check(self: InstanceConcurrencyContext) -> float:
    """Seconds until the earliest pending claim is due to be retried (0 when one is due or none is pending)."""
    if not self._pending_claims or not self._pending_timeouts:
        return 0.0
    return max(0.0, min(self._pending_timeouts.values()) - time.time())


def install() -> None:
    """Patch the slot wait (idempotent); raises if this Dagster no longer has what is patched."""
    for owner, name in ((InstanceConcurrencyContext, "interval_to_next_pending_claim_check"),
                        (active, "CONCURRENCY_CLAIM_MESSAGE_INTERVAL")):
        if not hasattr(owner, name):
            raise RuntimeError(f"dagster changed: {owner.__name__}.{name} is gone; update {__name__}")
    InstanceConcurrencyContext.interval_to_next_pending_claim_check = _interval_to_next_pending_claim_check
    active.CONCURRENCY_CLAIM_MESSAGE_INTERVAL = REPORT_INTERVAL_S
