"""What the fault suite's deliveries run: a little work, then a note of the run elsewhere.

Each run that finished is counted in the record Redis (``EDA_FAULTS_RECORD_URL``),
a server no fault touches, by event id: a count of 2 is a handler that ran
twice. ``flaky`` fails its first attempt, transiently, for 30% of events.
"""

from __future__ import annotations

import threading
import time

import redis

from eda.errors import TransientError
from eda.event import Event
from eda.settings import environ

#: The hash of finished runs, event id -> count, in the record Redis.
RUNS = "faults:runs"
#: Seconds of work per run: long enough that a kill finds deliveries running.
WORK = 0.02
#: Share of events (in tenths) whose first attempt ``flaky`` fails.
FLAKY_TENTHS = 3

_client: redis.Redis | None = None
_lock = threading.Lock()


def _record() -> redis.Redis:
    global _client
    with _lock:
        if _client is None:
            _client = redis.Redis.from_url(environ("EDA_FAULTS_RECORD_URL") or "")
        return _client


def work(event: Event) -> None:
    """Work a little, then count the run."""
    time.sleep(WORK)
    _record().hincrby(RUNS, event.id, 1)


def unlucky(event_id: str) -> bool:
    """True for the 30% of events (by id) whose first attempt fails."""
    return int(event_id[:8], 16) % 10 < FLAKY_TENTHS


def flaky(event: Event) -> None:
    """:func:`work`, failing transiently on the first attempt of 30% of events."""
    delivery = event.delivery
    if unlucky(event.id) and (delivery is None or delivery.attempt == 1):
        raise TransientError("a transient failure on the first attempt (30% of events)")
    work(event)
