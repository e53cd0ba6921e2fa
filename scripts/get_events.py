"""Event history: ``get_events.py [EVENT_TYPE] [SINCE] [LIMIT]``, newest first, as JSON.

SINCE is an RFC 3339 time or a duration ago (``15m``, ``2h``, ``1d``); LIMIT
defaults to 100.
"""

from __future__ import annotations

from typing import Any

from eda.times import parse_time
from scripts.gantz import arguments, reader, run, whole_number

#: How many events are returned when the caller does not say.
DEFAULT_LIMIT = 100


def main(argv: list[str]) -> list[dict[str, Any]]:
    """The stored events of a type (or of every type) since a time, newest first."""
    event_type, since, limit = arguments(argv, ("event_type", "since", "limit"))
    since_time = parse_time(since, field="since") if since is not None else None
    count = whole_number(limit, "limit", DEFAULT_LIMIT)
    history = reader().history(event_type, since_time, limit=count)
    return [stored.as_dict() for stored in history]


if __name__ == "__main__":
    run(main)
