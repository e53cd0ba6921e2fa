"""Publish an event: ``publish_event.py EVENT_TYPE [SOURCE]``, the JSON payload on stdin.

The payload may also come in ``GANTZ_ARG_PAYLOAD`` (Gantz does not pipe stdin).
Run by a handler's tool, the event carries the handled event's id as its cause
(``EDA_CAUSATION_ID``, ``EDA_CORRELATION_ID``). Prints the stored event as JSON.
"""

from __future__ import annotations

import json
from typing import Any

from eda.errors import InvalidInput
from scripts.gantz import arguments, connect, lineage, read_payload, run

#: The source recorded when the caller names none.
DEFAULT_SOURCE = "unknown"


def parse_payload(text: str) -> Any:
    """The payload as a JSON value; InvalidInput naming ``payload`` when it is not JSON."""
    if not text:
        raise InvalidInput("payload", "is required: JSON text on stdin or in GANTZ_ARG_PAYLOAD")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidInput("payload", f"is not JSON ({exc})") from None


def main(argv: list[str]) -> dict[str, Any]:
    """Publish one event and return it as stored."""
    event_type, source = arguments(argv, ("event_type", "source"), required=1)
    payload = parse_payload(read_payload())
    core = connect()
    published = core.publish(str(event_type), payload, source or DEFAULT_SOURCE, **lineage())
    return core.get_event(published.event_id).as_dict()


if __name__ == "__main__":
    run(main)
