"""Retry an event's failed deliveries: ``retry_event.py EVENT_ID``.

Each dead delivery gets a fresh one with a fresh retry budget; its dead letter
is removed once the new delivery is enqueued.
"""

from __future__ import annotations

from typing import Any

from scripts.gantz import arguments, connect, run


def main(argv: list[str]) -> dict[str, Any]:
    (event_id,) = arguments(argv, ("event_id",), required=1)
    assert event_id is not None
    return {"event_id": event_id, "retried": connect().retry_event(event_id)}


if __name__ == "__main__":
    run(main)
