"""What the measured deliveries run: nothing, or a note of when they started."""

from __future__ import annotations

import time

from eda.event import Event
from tasks.worker import worker_core


def started_key(prefix: str) -> str:
    """The hash of handler start times (wall clock) by event id."""
    return f"{prefix}:bench:started"


def noop(event: Event) -> None:
    """Nothing: the cost of a delivery alone."""


def stamp(event: Event) -> None:
    """Note the time the handler started, for the end-to-end latency."""
    now = time.time()
    core = worker_core()
    core.redis.hset(started_key(core.settings.prefix), event.id, repr(now))


def fail(event: Event) -> None:
    """Fail transiently: the delivery waits its retry's countdown."""
    raise RuntimeError("bench: this handler always fails")
