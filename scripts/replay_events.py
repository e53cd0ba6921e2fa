"""Replay stored events, keeping their ids and lineage.

``replay_events.py [EVENT_TYPE] [SINCE] [UNTIL] [LIMIT] [DRY_RUN] [HANDLER]``.

Each event keeps its id and lineage: its deliveries run again, marked as replays.
SINCE and UNTIL are RFC 3339 times or durations ago (``15m``, ``2h``); DRY_RUN
(``true``/``false``, default false) only says what would be replayed.
"""

from __future__ import annotations

from typing import Any

from eda.errors import InvalidInput
from eda.times import parse_bound
from scripts.gantz import arguments, connect, run, whole_number

#: How many events a replay takes at most when the caller does not say.
DEFAULT_LIMIT = 100


def flag(text: str | None, field: str) -> bool:
    if text is None:
        return False
    if text.lower() in ("true", "yes", "1"):
        return True
    if text.lower() in ("false", "no", "0"):
        return False
    raise InvalidInput(field, f"{text!r} is not true or false")


def main(argv: list[str]) -> dict[str, Any]:
    names = ("event_type", "since", "until", "limit", "dry_run", "handler")
    event_type, since, until, limit, dry_run, handler = arguments(argv, names)
    report = connect().replay(
        event_type,
        since=parse_bound(since, field="since") if since else None,
        until=parse_bound(until, field="until") if until else None,
        limit=whole_number(limit, "limit", DEFAULT_LIMIT),
        handler=handler,
        dry_run=flag(dry_run, "dry_run"),
    )
    return report.as_dict()


if __name__ == "__main__":
    run(main)
