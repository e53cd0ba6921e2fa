"""Handlers the delivery tests route to, steered by the event's payload.

Each counts its attempts and notes their times in Redis under the event's id, so
a test can see what the worker did: ``attempts(redis, event_id, handler)``.
"""

from __future__ import annotations

import gc
import json  # noqa: F401 (a module a subscription must not be able to name as a handler)
import time
from typing import Any

from eda.errors import PermanentError, TransientError
from eda.event import Event
from eda.handlers import Skip
from tasks.worker import worker_core


def _attempt(event: Event, name: str) -> int:
    client = worker_core().redis
    key = f"test-attempts:{event.id}:{name}"
    client.rpush(key, repr(time.time()))
    return int(client.llen(key))


def attempts(client: Any, event_id: str, name: str) -> list[float]:
    """The start times of every attempt a test handler made for this event."""
    return [float(x) for x in client.lrange(f"test-attempts:{event_id}:{name}", 0, -1)]


def flaky(event: Event) -> dict[str, Any]:
    """Fail ``fail_times`` times (transient unless ``mode`` is permanent), then succeed."""
    attempt = _attempt(event, "flaky")
    if attempt <= int(event.payload.get("fail_times", 0)):
        mode = event.payload.get("mode", "transient")
        if mode == "permanent":
            raise PermanentError(f"permanent failure on attempt {attempt}")
        if mode == "plain":
            raise RuntimeError(f"unclassified failure on attempt {attempt}")
        raise TransientError(f"transient failure on attempt {attempt}")
    return {"attempt": attempt}


def fails_naming_the_event(event: Event) -> dict[str, Any]:
    """Fail once with the event's repr in the error (as careless code does), then succeed."""
    attempt = _attempt(event, "fails_naming_the_event")
    if attempt == 1:
        raise TransientError(f"could not handle {event!r}")
    return {"attempt": attempt}


def fixable(event: Event) -> dict[str, Any]:
    """Fail while the Redis key ``test-broken:<event id>`` exists."""
    attempt = _attempt(event, "fixable")
    if worker_core().redis.exists(f"test-broken:{event.id}"):
        raise TransientError("still broken")
    return {"attempt": attempt}


def noop(event: Event) -> None:
    """Nothing, and no note either: what a delivery costs the worker alone."""


def succeed(event: Event) -> dict[str, Any]:
    return {"attempt": _attempt(event, "succeed")}


def fail(event: Event) -> None:
    _attempt(event, "fail")
    raise PermanentError("this handler always fails")


def skips(event: Event) -> None:
    """Decide the event is not for it, as a pipeline's filter does."""
    _attempt(event, "skips")
    raise Skip("not an event for this handler", stage="tests")


def slow(event: Event) -> dict[str, Any]:
    """Sleep ``seconds`` (the crash test kills the worker meanwhile)."""
    attempt = _attempt(event, "slow")
    time.sleep(float(event.payload.get("seconds", 1)))
    return {"attempt": attempt}


def reject_key_error(event: Event) -> None:
    _attempt(event, "reject_key_error")
    raise KeyError("missing")


def exits(event: Event) -> None:
    """Call exit, as a careless handler might: the worker must survive it."""
    _attempt(event, "exits")
    raise SystemExit(3)


def needs_two_arguments(event: Event, other: Any) -> None:
    """Not a handler: it cannot be called with one event."""


def reports_the_frozen(event: Event) -> dict[str, Any]:
    """Report how many objects the worker's garbage collector leaves alone (gc.freeze)."""
    return {"frozen": gc.get_freeze_count()}


def reports_its_delivery(event: Event) -> dict[str, Any]:
    """Report the delivery that handed it the event: its id, run and attempt."""
    assert event.delivery is not None
    if event.delivery.attempt < int(event.payload.get("fail_times", 0)) + 1:
        raise TransientError(f"failing attempt {event.delivery.attempt}")
    info = event.delivery
    return {"key": info.idempotency_key, "run": info.run, "attempt": info.attempt}


#: Counts deliveries running at once per key, and keeps the highest count seen.
_PROBE = """
local now = redis.call('INCRBY', KEYS[1], ARGV[1])
if tonumber(ARGV[1]) > 0 and now > tonumber(redis.call('GET', KEYS[2]) or '0') then
  redis.call('SET', KEYS[2], now)
end
return now
"""


def concurrent_probe(event: Event) -> dict[str, Any]:
    """Run for ``seconds`` while counting how many run at once (per ``probe`` and ``group``)."""
    client = worker_core().redis
    probes = [
        f"test-probe:{event.payload['probe']}:{event.payload.get('group', '')}",
        f"test-probe:{event.payload['probe']}:*",
    ]
    for probe in probes:
        client.eval(_PROBE, 2, f"{probe}:running", f"{probe}:max", 1)
    try:
        _attempt(event, "concurrent_probe")
        time.sleep(float(event.payload.get("seconds", 0.05)))
    finally:
        for probe in probes:
            client.eval(_PROBE, 2, f"{probe}:running", f"{probe}:max", -1)
    return {"ok": True}
