"""Publish an event: ``publish_event.py EVENT_TYPE [SOURCE]``, the JSON payload on stdin.

The payload may also come in ``GANTZ_ARG_PAYLOAD`` (Gantz does not pipe stdin).
Run by a handler's tool, the event carries the handled event's id as its cause
(``EDA_CAUSATION_ID``, ``EDA_CORRELATION_ID``), and a tool call's idempotency key
(``EDA_IDEMPOTENCY_KEY``) becomes its dedupe key: a call run again after a crash
returns the event it published the first time instead of publishing another.
A tool call's trace context (``TRACEPARENT``, ``TRACESTATE``) goes on with the event,
so its spans continue the caller's trace. Prints the stored event as JSON.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from eda import traces
from eda.errors import InvalidInput
from eda.event import MAX_FIELD_LENGTH, Event
from scripts.gantz import (
    arguments,
    idempotency_key,
    lineage,
    publisher,
    read_payload,
    run,
    variable,
)

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


def dedupe_key(idempotency_key: str) -> str:
    """The event's dedupe key for a tool call's idempotency key (hashed when too long)."""
    key = f"tool:{idempotency_key}"
    if len(key) > MAX_FIELD_LENGTH:
        key = f"tool:{hashlib.sha256(idempotency_key.encode()).hexdigest()}"
    return key


def main(argv: list[str]) -> dict[str, Any]:
    """Publish one event and return it as stored."""
    event_type, source = arguments(argv, ("event_type", "source"), required=1)
    payload = parse_payload(read_payload())
    fields: dict[str, Any] = lineage()
    key = idempotency_key()
    if key is not None:
        fields["dedupe_key"] = dedupe_key(key)
    trace = traces.carrier(
        variable(traces.ENVIRONMENT_CARRIER["traceparent"]),
        variable(traces.ENVIRONMENT_CARRIER["tracestate"]),
    )
    if trace:
        fields["attributes"] = trace
    event = Event.create(
        type=str(event_type), payload=payload, source=source or DEFAULT_SOURCE, **fields
    )
    core = publisher()
    with traces.ingest(event, {}, kind="PRODUCER") as traced:
        published = core.publish_event(traced)
    return core.get_event(published.event_id).as_dict()


if __name__ == "__main__":
    run(main)
