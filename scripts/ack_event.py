"""Acknowledge an event by hand: ``ack_event.py EVENT_ID [STATUS]`` (default ``processed``).

STATUS is one of eda.store.ACK_STATUSES. Prints the event id, the status set
and the status the event had before.
"""

from __future__ import annotations

from typing import Any

from scripts.gantz import arguments, reader, run

#: The status set when the caller names none.
DEFAULT_STATUS = "processed"


def main(argv: list[str]) -> dict[str, Any]:
    """Set an event's status and say what it was."""
    event_id, status = arguments(argv, ("event_id", "status"), required=1)
    chosen = status or DEFAULT_STATUS
    previous = reader().acknowledge(str(event_id), chosen)
    return {"event_id": event_id, "status": chosen, "previous_status": previous}


if __name__ == "__main__":
    run(main)
