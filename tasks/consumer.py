"""The worker's consumer, sending task events for Flower in batches of a few milliseconds.

Celery's worker buffers task events (``task-received``, ``task-started``,
``task-succeeded``, ...) and sends what it holds as one ``task.multi`` message at
every turn of its event loop. A busy loop turns once or twice a task, so each
message carries two or three events, and sending them took a fifth of a worker's
time per no-op delivery. This consumer sends them at most every
:data:`EVENT_FLUSH_INTERVAL` seconds instead (Celery still sends at once when
its buffer holds ``buffer_limit`` events): one message for many tasks. Monitors
see each event that much later, and no event is dropped.

``celeryconfig.worker_consumer`` selects it.
"""

from __future__ import annotations

import contextlib
from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer

#: Seconds a task event may wait so that it leaves with others.
EVENT_FLUSH_INTERVAL = 0.05
#: Events held before they leave at once, whatever the timer (Celery's default is 24,
#: which a busy worker reaches every eight tasks, sending from a task's own thread).
EVENT_BUFFER_LIMIT = 1000


class Consumer(CeleryConsumer):
    """Celery's consumer, with task events sent on a short timer rather than every turn."""

    _event_flush: Any = None
    _event_dispatcher: Any = None

    @property
    def event_dispatcher(self) -> Any:
        return self._event_dispatcher

    @event_dispatcher.setter
    def event_dispatcher(self, dispatcher: Any) -> None:
        # Celery's Events step sets it at every (re)connection: None when it closes the
        # old dispatcher, then the new one, which takes over the old one's outbound buffer.
        if dispatcher is None and self._event_dispatcher is not None:
            hand_over(self._event_dispatcher)
        if dispatcher is not None:
            dispatcher.buffer_limit = EVENT_BUFFER_LIMIT
        self._event_dispatcher = dispatcher

    def _flush_events(self) -> None:
        # Runs in the event loop's thread: once per turn while events wait.
        if self._event_flush is None or self._event_flush.canceled:
            self._event_flush = self.hub.call_later(EVENT_FLUSH_INTERVAL, self._send_events)

    def _send_events(self) -> None:
        self._event_flush = None
        super()._flush_events()

    def shutdown(self) -> None:
        # What the timer still holds leaves before the connection closes.
        with contextlib.suppress(Exception):
            super()._flush_events()
        super().shutdown()


def hand_over(dispatcher: Any) -> None:
    """Move the task events a closed dispatcher still buffers to its outbound buffer.

    Celery passes a replaced dispatcher's outbound buffer (what it could not send) to
    the next one, not its buffer of task events: those the timer had not sent yet
    leave with the next dispatcher's first flush, as one batch each.
    """
    for group, events in dispatcher._group_buffer.items():
        if events:
            dispatcher._outbound_buffer.append((list(events), f"{group}.multi"))
            del events[:]
