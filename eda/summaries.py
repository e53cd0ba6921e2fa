"""Compact history: one line of facts per event, in pages that fit a model's context.

A full stored event carries every delivery's runs, attempts and outcomes (an
agent's outcome alone is kilobytes), which no MCP client can take by the
hundred. A summary keeps what a reader scans for: id, type, source, time,
status and each handler's status. A page holds at most ``limit`` summaries and
about ``max_bytes`` of JSON; when more match, ``next_cursor`` continues after
its last event. The full record of one event is :meth:`Core.get_event`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eda.core import Core
from eda.errors import InvalidInput
from eda.store import StoredEvent

#: Summaries a page holds when the caller does not say.
DEFAULT_LIMIT = 20
#: Most summaries one page may hold.
MAX_LIMIT = 1000
#: JSON bytes a page's summaries stay within when the caller does not say (one always fits).
DEFAULT_MAX_BYTES = 6000
#: ``max_bytes`` of a page bounded by ``limit`` alone (a person's screen, an API client).
UNBOUNDED = 2**62
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
    found = core.history(event_type, low, high, limit=limit + 1, newest_first=newest_first)
    events: list[dict[str, Any]] = []
    size = 0
    for stored in found[:limit]:
        item = summary(stored)
        size += len(json.dumps(item)) + 2
        if events and size > max_bytes:
            break
        events.append(item)
    more = len(found) > len(events)
    return Page(events, found[len(events) - 1].stream_id if more else None)
