"""What several scenarios do: store events of a known size, pace a loop, check outcomes."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

from bench.context import Bench
from bench.http_load import payload
from eda.event import Event

#: The handler the no-op events are routed to (bench/routes.yaml).
NOOP = "bench.handlers:noop"

#: The SDK's sampler keeping one trace in ten (of traces started here, and of those
#: whose sender sampled them): the trade the README names for busy deployments.
SAMPLED = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}


def body(bench: Bench, kind: str) -> dict[str, object]:
    """The payload every measured event carries: ``payload_bytes`` of JSON."""
    document: dict[str, object] = json.loads(payload(kind, bench.sizes.payload_bytes))
    return document


def store_events(bench: Bench, count: int, kind: str = "noop") -> list[Event]:
    """Store ``count`` events as a webhook would (with a sender's delivery id), undispatched."""
    document = body(bench, kind)
    events = []
    for _ in range(count):
        event = Event.create(
            type=f"bench.{kind}",
            source="bench",
            payload=document,
            dedupe_key=f"bench:msg_{os.urandom(12).hex()}",
        )
        bench.plain_core.publish_event(event)
        events.append(event)
    return events


def paced(count: int, rate: float, action: Callable[[int], None]) -> float:
    """Call ``action(i)`` for i < count at ``rate`` per second; the largest lag behind schedule."""
    start = time.perf_counter()
    behind = 0.0
    for index in range(count):
        due = start + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        behind = max(behind, time.perf_counter() - due)
        action(index)
    return behind


def statuses(bench: Bench, event_ids: list[str], handler: str) -> dict[str, int]:
    """How many of these events' deliveries to ``handler`` are in each status."""
    counts: dict[str, int] = {}
    for start in range(0, len(event_ids), 500):
        for stored in bench.plain_core.store.get_many(event_ids[start : start + 500]):
            status = stored.deliveries.get(handler, {}).get("status", "none")
            counts[status] = counts.get(status, 0) + 1
    return counts


def require(condition: bool, message: str) -> None:
    """Stop the run when what was measured is not what was meant to be measured."""
    if not condition:
        raise RuntimeError(message)
