"""Compact history: one line of facts per event, in pages that fit a model's context.

A full stored event carries every delivery's runs, attempts and outcomes (an
agent's outcome alone is kilobytes), which no MCP client can take by the
hundred. A summary keeps what a reader scans for: id, type, source, time,
status and each handler's status. A page holds at most ``limit`` summaries and
about ``max_bytes`` of JSON; when more match, ``next_cursor`` continues after
its last event. The full record of one event is :meth:`Core.get_event`.

A page reads what it shows: each record's summary fields (kept beside the event's
JSON when it is published) and delivery records, a chunk of events at a time until
the page is full, never a payload or a handler's outcome, which may be megabytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eda.core import Core
from eda.errors import InvalidInput
from eda.store import EventStore, StoredEvent

#: Summaries a page holds when the caller does not say.
DEFAULT_LIMIT = 20
#: Most summaries one page may hold.
MAX_LIMIT = 1000
#: JSON bytes a page's summaries stay within when the caller does not say (one always fits).
DEFAULT_MAX_BYTES = 6000
#: ``max_bytes`` of a page bounded by ``limit`` alone (a person's screen, an API client).
UNBOUNDED = 2**62
#: Summaries read a round trip: a default page and the one that tells whether more match.
CHUNK = 50
#: Fields of an event record a summary reads (never ``data``, which holds the payload).
SUMMARY_FIELDS = ("type", "source", "time", "status", "sid")
#: A cursor: the stream id of the last event of the page before.
CURSOR = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")


def summary(stored: StoredEvent) -> dict[str, Any]:
    """id, type, source, time, status, and each handler's delivery status."""
    event = stored.event
    return {
        "id": event.id,
        "type": event.type,
        "source": event.source,
        "time": event.timestamp,
        "status": stored.status,
        "handlers": {h: d.get("status", "?") for h, d in stored.deliveries.items()},
    }


def _handler_status(raw: str) -> str:
    try:
        return str(json.loads(raw)["status"])
    except (ValueError, KeyError, TypeError):
        return "unreadable"


def read_summaries(store: EventStore, event_ids: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """(stream id, summary) of the stored events among these ids, in order, in one round trip.

    Reads each record's summary fields and delivery records, never its payload or the
    handlers' outcomes; a record stored before it kept its summary fields is read whole.
    """
    pipe = store.redis.pipeline(transaction=False)
    for event_id in event_ids:
        pipe.hmget(store.keys.event(event_id), *SUMMARY_FIELDS)
        pipe.hgetall(store.keys.deliveries(event_id))
    replies = store.execute(pipe)
    found: list[tuple[str, dict[str, Any]]] = []
    for event_id, fields, deliveries in zip(event_ids, replies[::2], replies[1::2], strict=True):
        event_type, source, time, status, stream_id = fields
        if stream_id is None:  # retention took it
            continue
        if event_type is None:
            found.extend(
                (stored.stream_id, summary(stored)) for stored in store.get_many([event_id])
            )
            continue
        handlers = {h: _handler_status(raw) for h, raw in sorted(deliveries.items())}
        item = {"id": event_id, "type": event_type, "source": source, "time": time}
        found.append((stream_id, {**item, "status": status, "handlers": handlers}))
    return found


def _summaries_of(store: EventStore, event_ids: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The summaries of these events, read a chunk at a time, as far as the caller goes."""
    for start in range(0, len(event_ids), CHUNK):
        yield from read_summaries(store, event_ids[start : start + CHUNK])


@dataclass(frozen=True)
class Page:
    """Summaries, and the cursor of the next page (None: nothing more matches)."""

    events: list[dict[str, Any]]
    next_cursor: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"events": self.events, "next_cursor": self.next_cursor}


def history_page(
    core: Core,
    event_type: str | None = None,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    *,
    limit: int = DEFAULT_LIMIT,
    newest_first: bool = True,
    cursor: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Page:
    """One page of summaries of the events in the window, newest first unless told.

    Raises InvalidInput naming ``limit``, ``max_bytes`` or ``cursor`` when out of range.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput("limit", f"must be between 1 and {MAX_LIMIT}")
    if max_bytes < 1:
        raise InvalidInput("max_bytes", "must be at least 1")
    if cursor is not None and not CURSOR.fullmatch(cursor):
        raise InvalidInput("cursor", "is not a cursor this history returned (next_cursor)")
    after: str | datetime | None = f"({cursor}" if cursor is not None else None
    low, high = (since, after or until) if newest_first else (after or since, until)
    found = core.store.history_ids(
        event_type, low, high, limit=limit + 1, newest_first=newest_first
    )
    events: list[dict[str, Any]] = []
    size = 0
    shown = ""
    for stream_id, item in _summaries_of(core.store, found):
        size += len(json.dumps(item)) + 2
        if len(events) == limit or (events and size > max_bytes):
            return Page(events, shown)
        events.append(item)
        shown = stream_id
    return Page(events, None)
