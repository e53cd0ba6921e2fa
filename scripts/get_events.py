"""Event history: ``get_events.py [EVENT_TYPE] [SINCE] [LIMIT] [CURSOR] [EVENT_ID]`` as JSON.

Summaries, newest first (id, type, source, time, status, each handler's status),
at most LIMIT (default 20) and about 6,000 bytes of them: ``next_cursor``, passed
back as CURSOR, continues after the last. With EVENT_ID, that one event's full
record instead: payload, deliveries, runs, attempts and what each handler did.
SINCE is an RFC 3339 time or a duration ago (``15m``, ``2h``, ``1d``).
"""

from __future__ import annotations

from typing import Any

from eda.summaries import DEFAULT_LIMIT, history_page
from eda.times import parse_time
from scripts.gantz import arguments, reader, run, whole_number


def main(argv: list[str]) -> dict[str, Any]:
    """A page of summaries of a type (or of every type) since a time, or one full record."""
    names = ("event_type", "since", "limit", "cursor", "event_id")
    event_type, since, limit, cursor, event_id = arguments(argv, names)
    if event_id is not None:
        core = reader()
        record = core.get_event(event_id).as_dict()
        record["transcripts"] = core.transcripts(event_id)  # each agent run, turn by turn
        return record
    since_time = parse_time(since, field="since") if since is not None else None
    count = whole_number(limit, "limit", DEFAULT_LIMIT)
    page = history_page(reader(), event_type, since_time, limit=count, cursor=cursor)
    return page.as_dict()


if __name__ == "__main__":
    run(main)
