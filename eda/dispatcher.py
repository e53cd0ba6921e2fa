"""The dispatcher: dispatches, in batches, the events the web handed over.

The web answers a webhook as soon as the event is stored: the one Redis write
that stores it also pushes its id on the dispatch queue (``P:dispatch``). Every
worker runs a dispatcher (``tasks/dispatcher.py`` starts it) that takes ids from
that queue in batches and dispatches each event with :meth:`Core.dispatch`, as
any other face would, reading the subscriptions once per batch. An id taken by
a dispatcher that dies before dispatching is still ``pending``: the sweeper
dispatches it after the grace period.
"""

from __future__ import annotations

import contextlib
import logging
import threading

from eda.core import Core
from eda.errors import EdaError

log = logging.getLogger(__name__)

#: Most events one batch takes from the queue.
BATCH = 200
#: Seconds one wait for work blocks (also how long stopping can take).
WAIT = 0.5


class Dispatcher:
    """Takes handed-over events off the dispatch queue and dispatches them."""

    def __init__(self, core: Core, batch: int = BATCH, wait: float = WAIT) -> None:
        self.core = core
        self.batch = batch
        self.wait = wait

    def dispatch_batch(self) -> int:
        """Dispatch one batch (waiting up to ``wait`` for the first event); how many were taken."""
        ids = self.core.store.take_dispatch(self.batch, self.wait)
        if not ids:
            return 0
        # What is no longer pending was dispatched by the sweeper, or another face, first.
        pending = self.core.store.still_pending(ids)
        outcomes = self.core.dispatch_many(pending)
        for event, outcome in zip(pending, outcomes, strict=True):
            if isinstance(outcome, Exception):
                log.warning(
                    "dispatch deferred to the sweeper: %s", outcome, extra={"event_id": event.id}
                )
                with contextlib.suppress(EdaError):
                    self.core.store.mark_undispatched(event.id, f"dispatch failed: {outcome}")
        return len(ids)

    def run(self, stop: threading.Event) -> None:
        """Dispatch until ``stop`` is set; an unreachable Redis or broker is waited out."""
        while not stop.is_set():
            try:
                self.dispatch_batch()
            except Exception as exc:
                log.warning("the dispatcher waits for the store: %s", exc)
                stop.wait(1.0)
