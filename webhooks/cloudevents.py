"""``POST /events``: CloudEvents 1.0 over HTTP, in binary, structured and batched mode.

- binary: attributes in ``ce-*`` headers (percent-encoded), the data as the body
  with its own ``Content-Type`` (JSON, or text kept as a string);
- structured: ``application/cloudevents+json``, one event as a JSON object;
- batched: ``application/cloudevents-batch+json``, a JSON array of such objects.

Requests are signed like any other source (Standard Webhooks, secret in
``EDA_WEBHOOK_SECRET_EVENTS``). In structured and batched mode the sender's
``id``, unique per ``source``, is signed with the body, so the pair is the dedupe
key; in binary mode the ``ce-*`` headers are not signed, so the signed
``webhook-id`` is. Our own id is new, and lineage (``correlationid``,
``causationid``) is never taken from a sender: it is ours to keep. Types go
through the type map's ``cloudevents`` section. A batch is checked whole before
anything is stored.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import unquote

from flask import Blueprint, Response, jsonify, request
from werkzeug.exceptions import UnsupportedMediaType

from eda.errors import InvalidInput
from eda.event import Event
from webhooks import dedupe, verify
from webhooks.answers import error, publish, published
from webhooks.extension import services
from webhooks.ingest import authenticate, lower_headers, parse_json, raw_body
from webhooks.sources import Source, read_standard, secret_variable

#: The section of the type map, and the name of the source in messages.
SECTION = "cloudevents"
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
#: Media types besides text/* and */*+xml whose data is text.
TEXT_TYPES = frozenset({"application/xml", "application/yaml", "application/x-yaml"})
#: Most events one batch may carry.
MAX_BATCH = 1000
#: The signing scheme and secret of ``POST /events``.
EVENTS = Source("events", secret_variable("events"), verify.standard, read_standard)

#: CloudEvents extensions a sender may not set: the lineage of our own events.
LINEAGE = ("correlationid", "causationid")

blueprint = Blueprint("cloudevents", __name__)


def to_event(cloudevent: Any, message_id: str | None = None) -> Event:
    """Our event for one CloudEvent object; InvalidInput says what is wrong.

    ``message_id`` is the signed ``webhook-id`` of a binary-mode request: its dedupe key,
    since the ``ce-id`` header beside it is not signed.
    """
    if not isinstance(cloudevent, dict):
        raise InvalidInput("cloudevent", "must be a JSON object")
    for required in ("id", "source", "type"):
        if not isinstance(cloudevent.get(required), str):
            raise InvalidInput(required, "is required by CloudEvents and must be a string")
    mapped = services().types.resolve(SECTION, [cloudevent["type"]], {"type": cloudevent["type"]})
    # The sender's id is unique only within its source: the pair is what dedupes.
    if message_id is not None:
        key = dedupe.key(dedupe.EVENTS, "message", message_id)
    else:
        key = dedupe.key(dedupe.EVENTS, "ce", cloudevent["source"], cloudevent["id"])
    ours = {name: value for name, value in cloudevent.items() if name not in LINEAGE}
    return Event.from_cloudevent({**ours, "type": mapped}, keep_id=False, dedupe_key=key)


def binary_attributes(headers: dict[str, str]) -> dict[str, Any]:
    """The CloudEvent carried by ``ce-*`` headers, with the body as its data."""
    if "ce-specversion" not in headers:
        raise UnsupportedMediaType(f"send {STRUCTURED}, {BATCH}, or binary mode with ce-* headers")
    attributes: dict[str, Any] = {
        name[3:]: unquote(value) for name, value in headers.items() if name.startswith("ce-")
    }
    body = raw_body()
    mimetype = request.mimetype
    if request.content_type:  # the binding maps Content-Type to datacontenttype
        attributes["datacontenttype"] = request.content_type
    if not body:
        attributes["data"] = None
    elif mimetype == "application/json" or mimetype.endswith("+json"):
        attributes["data"] = parse_json(body)
    elif is_text(mimetype):
        try:
            attributes["data"] = body.decode(request.mimetype_params.get("charset", "utf-8"))
        except (LookupError, UnicodeDecodeError):
            raise InvalidInput("body", "is not text in its declared charset") from None
    else:  # kept byte for byte, as CloudEvents' own JSON format keeps binary data
        attributes["data_base64"] = base64.b64encode(body).decode("ascii")
    return attributes


def is_text(mimetype: str) -> bool:
    """Media types whose data is kept as text (any other non-JSON data is kept as base64)."""
    return mimetype.startswith("text/") or mimetype in TEXT_TYPES or mimetype.endswith("+xml")


def read_events() -> list[Event]:
    """Every event the request carries, each checked; nothing is stored yet."""
    mimetype = request.mimetype
    if mimetype == STRUCTURED:
        return [to_event(parse_json(raw_body()))]
    if mimetype == BATCH:
        batch = parse_json(raw_body())
        if not isinstance(batch, list):
            raise InvalidInput("body", "a batch is a JSON array of CloudEvents")
        if len(batch) > MAX_BATCH:
            raise InvalidInput("body", f"a batch holds at most {MAX_BATCH} events")
        events = []
        for index, item in enumerate(batch):
            try:
                events.append(to_event(item))
            except InvalidInput as exc:
                raise InvalidInput(f"[{index}].{exc.field}", exc.reason) from None
        return events
    headers = lower_headers()
    return [to_event(binary_attributes(headers), verify.message_id(headers))]


@blueprint.route("/events", methods=["OPTIONS"])
def handshake() -> Response:
    """CloudEvents' webhook abuse protection: may ``WebHook-Request-Origin`` send here?

    200 with ``WebHook-Allowed-Origin`` (and ``WebHook-Allowed-Rate`` when a rate was
    asked) for an origin of ``EDA_CLOUDEVENTS_ALLOWED_ORIGINS``; 403 for any other.
    """
    origin = request.headers.get("WebHook-Request-Origin", "").strip()
    if not origin:
        raise InvalidInput("WebHook-Request-Origin", "the handshake names the sending origin")
    allowed = services().settings.cloudevents_allowed_origins
    if "*" not in allowed and origin not in allowed:
        return error(
            403, "forbidden", f"origin {origin[:200]!r} is not in EDA_CLOUDEVENTS_ALLOWED_ORIGINS"
        )
    response = Response(status=200)
    response.headers["WebHook-Allowed-Origin"] = origin
    response.headers["Allow"] = "POST, OPTIONS"
    if request.headers.get("WebHook-Request-Rate"):
        response.headers["WebHook-Allowed-Rate"] = "*"
    return response


@blueprint.route("/events", methods=["POST"], provide_automatic_options=False)
def receive() -> Response:
    """Accept CloudEvents: 202 with the id (or ids) stored, 200 when all were duplicates."""
    authenticate(EVENTS, raw_body(), lower_headers())
    batched = request.mimetype == BATCH
    events = read_events()
    results = [publish(event) for event in events]
    if not batched:
        return published(results[0])
    response = jsonify(
        {"events": [{"event_id": r.event_id, "duplicate": r.duplicate} for r in results]}
    )
    response.status_code = 202 if any(not r.duplicate for r in results) else 200
    return response
