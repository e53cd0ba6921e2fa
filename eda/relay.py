"""The relay: dispatches, in batches, the events the web handed over.

The web answers a webhook as soon as the event is stored: the one Redis write
that stores it also pushes its id on the dispatch queue (``P:dispatch``). A
relay (the Procfile's ``relay`` process, or a thread in every worker:
``tasks/relay.py``) takes ids from that queue in batches and dispatches each
event with :meth:`Core.dispatch`, as any other face would, reading the
subscriptions once per batch. An id taken by a relay that dies before
dispatching is still ``pending``: the sweeper dispatches it after the grace
period. (Named "relay", not "dispatcher", so as not to be confused with
Celery's event dispatcher.) While tracing, each batch is an ``eda.relay`` span
linked to the trace of every event it dispatches.

A batch of N events costs Redis (store and broker) a few round trips, whatever N:

1. ``BLPOP`` for the first id, only when the last batch was not full (the queue
   had run dry); a relay kept busy skips it;
2. ``lua/take.lua``: the rest of the batch, which of its events are still
   pending (with their data), and the subscriptions;
3. one pipeline recording every delivery as queued but not yet sent
   (``enqueue_failed``), so that a relay killed at any point leaves each to the
   sweeper (see :meth:`Core.dispatch_many`);
4. one read of the lane bindings (``tasks/enqueue.py``), then kombu's publish
   batch: messages and task-sent events in pipelines of 50 deliveries;
5. one pipeline clearing the flag of each sent delivery and the events from
   ``pending``.

Counted with redis-py's sends (``INFO`` agrees, a large pipeline aside), a batch
of 200 no-op events cost 210 round trips before steps 1 and 2 were one script and
the bindings were read once a batch (kombu read them once a message), and costs
8 to 9 now (10 events: 17 before, 5 to 6 now); the relay's CPU per event fell
from 1.2 to 0.65-0.85 ms. Steps 3 and 5 stay apart from 4 on purpose: the
records must be in Redis before a worker can take a message, and the messages
are Celery's, built and sent by kombu on the broker's own connection (which may
be RabbitMQ, or another Redis); one transaction across them would mean writing
kombu's message format here. Nor is step 5 put off to ride with the next batch's
step 3: until it runs the batch's events stay ``pending``, and a relay that then
waited for work or was killed would leave them to the sweeper to send again.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

from eda import logs, traces
from eda.core import Core, parsed_subscriptions
from eda.errors import EdaError, NotFound
from eda.event import Event

log = logging.getLogger(__name__)

#: Most events one batch takes from the queue.
BATCH = 200
#: Seconds one wait for work blocks (how long stopping takes, unless :meth:`Relay.wake`).
WAIT = 0.5
#: Seconds before a batch's failed events are dispatched once more (then the sweeper's).
RETRY_AFTER = 0.2
#: Seconds between looks for held deliveries (long retries and waits) that are due.
HELD_EVERY = 0.5


class Relay:
    """Takes handed-over events off the dispatch queue and dispatches them."""

    def __init__(
        self, core: Core, batch: int = BATCH, wait: float = WAIT, name: str = "relay"
    ) -> None:
        self.core = core
        self.batch = batch
        self.wait = wait
        #: How this relay's heartbeat names it (the sweeper leaves a live relay its queue).
        self.name = name
        self._beaten = 0.0
        self._looked = 0.0
        #: The last batch took all it could: the next one looks before it waits.
        self._full = False

    def dispatch_batch(self) -> int:
        """Dispatch one batch (waiting up to ``wait`` for the first event); how many were taken."""
        taken = self.core.store.take_dispatch(
            self.batch, self.wait, block=not self._full, wake=self.name
        )
        self._full = len(taken.ids) == self.batch
        if not taken.ids:
            return 0
        # What is no longer pending was dispatched by the sweeper, or another face, first.
        pending = taken.pending
        subscriptions = parsed_subscriptions(taken.subscriptions)
        with traces.relay_batch(pending):
            failed = self._dispatch(pending, subscriptions)
            if failed:  # a broker that blinked: once more, under new task ids
                time.sleep(RETRY_AFTER)
                failed = self._dispatch([event for event, _ in failed], subscriptions)
        for event, exc in failed:
            failure = logs.error_summary(exc)
            log.warning(
                "dispatch deferred to the sweeper: %s", failure, extra={"event_id": event.id}
            )
            with contextlib.suppress(EdaError):
                self.core.store.mark_undispatched(event.id, f"dispatch failed: {failure}")
        return len(taken.ids)

    def _dispatch(
        self, events: list[Event], subscriptions: list[dict[str, Any]]
    ) -> list[tuple[Event, Exception]]:
        """Dispatch these events; those that could not be, with why (NotFound is not kept)."""
        outcomes = zip(events, self.core.dispatch_many(events, subscriptions), strict=True)
        return [
            (event, outcome)
            for event, outcome in outcomes
            if isinstance(outcome, Exception) and not isinstance(outcome, NotFound)
        ]

    def run(self, stop: threading.Event) -> None:
        """Dispatch until ``stop`` is set; an unreachable Redis or broker is waited out."""
        waiting = False
        while not stop.is_set():
            try:
                self._beat()
                self.dispatch_batch()
                self._send_held()
                if waiting:
                    log.info("the relay reaches the store again")
                waiting = False
            except Exception as exc:
                if not waiting:  # one line when an outage starts, one when it ends
                    log.warning("the relay waits for the store: %s", logs.error_summary(exc))
                waiting = True
                stop.wait(1.0)

    def wake(self) -> None:
        """End this relay's wait for work: set ``run``'s ``stop`` first, and it stops now
        rather than when the wait ends (up to ``wait`` seconds)."""
        self.core.store.wake_dispatcher(self.name)

    def _send_held(self) -> None:
        now = time.monotonic()
        if now - self._looked >= HELD_EVERY:
            self._looked = now
            self.core.send_held()

    def _beat(self) -> None:
        now = time.monotonic()
        if now - self._beaten >= self.core.liveness.interval:
            self.core.liveness.beat("relay", self.name)
            self._beaten = now
