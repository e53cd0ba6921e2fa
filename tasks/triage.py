"""Beat's side of dead-letter triage: the task its schedule runs (see eda/triage.py)."""

from __future__ import annotations

import logging

from eda.triage import Cause, request_triage
from tasks import app

log = logging.getLogger(__name__)


@app.task(name="eda.triage", ignore_result=True)
def triage(cause: Cause = "schedule") -> str | None:
    """Ask DeadLetterTriager to run, when triage is on and letters wait (or pile up)."""
    from tasks.worker import worker_core

    published = request_triage(worker_core(), cause)
    if published is None or published.duplicate:
        return None
    log.info("dead-letter triage requested (%s): event %s", cause, published.event_id)
    return published.event_id
