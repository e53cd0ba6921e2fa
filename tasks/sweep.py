"""Beat's sweep: the outbox, expired concurrency slots, and stuck deliveries."""

from __future__ import annotations

import logging

from eda import flow
from tasks import app
from tasks.worker import worker_core

log = logging.getLogger(__name__)


@app.task(name="eda.sweep", ignore_result=True)
def sweep() -> int:
    """Dispatch events left pending, then recover deliveries nobody will run."""
    core = worker_core()
    dispatched = core.sweep()
    if dispatched:
        log.info("outbox sweeper dispatched %d pending events", dispatched)
    woken = flow.tick(core)
    if woken:
        log.warning("handed %d expired concurrency slots to waiting deliveries", woken)
    recovered = core.recover()
    if recovered:
        log.warning("recovered %d stuck deliveries", recovered)
    return dispatched + recovered
