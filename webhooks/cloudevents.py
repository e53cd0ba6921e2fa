"""``POST /events``: CloudEvents 1.0 over HTTP, in binary, structured and batched mode.

- binary: attributes in ``ce-*`` headers (percent-encoded), the data as the body
  with its own ``Content-Type`` (JSON, or text kept as a string);
- structured: ``application/cloudevents+json``, one event as a JSON object;
- batched: ``application/cloudevents-batch+json``, a JSON array of such objects.

A request is authenticated in one of two ways:

- signed like any other source (Standard Webhooks, or Svix's headers, secret in
  ``EDA_WEBHOOK_SECRET_EVENTS``). In structured and batched mode the sender's
  ``id``, unique per ``source``, is signed with the body, so the pair is the
  dedupe key; in binary mode the ``ce-*`` headers are not signed, so the signed
  ``webhook-id`` is;
- with a named sender's token, as CloudEvents SDKs and brokers send one:
  ``Authorization: Bearer <token>`` or ``X-Api-Key: <token>``, the token in
  ``EDA_EVENTS_TOKEN_<SENDER>``. The token covers the whole request, so the
  CloudEvent's ``source`` + ``id`` is the dedupe key in every mode, in the
  sender's own namespace (``events/<sender>``).

A request with neither is refused (401). Our own id is new, and lineage
(``correlationid``, ``causationid``) is never taken from a sender: it is ours to
keep. Types go through the type map's ``cloudevents`` section. A batch is checked
whole before anything is stored.
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
from webhooks.verify import SignatureRejected

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


def to_event(
    cloudevent: Any, message_id: str | None = None, namespace: str = dedupe.EVENTS
) -> Event:
    """Our event for one CloudEvent object; InvalidInput says what is wrong.

    ``message_id`` is the signed ``webhook-id`` of a binary-mode request: its dedupe key,
    since the ``ce-id`` header beside it is not signed. ``namespace`` is the sender's.
    """
    if not isinstance(cloudevent, dict):
        raise InvalidInput("cloudevent", "must be a JSON object")
    for required in ("id", "source", "type"):
        if not isinstance(cloudevent.get(required), str):
            raise InvalidInput(required, "is required by CloudEvents and must be a string")
    mapped = services().types.resolve(SECTION, [cloudevent["type"]], {"type": cloudevent["type"]})
    # The sender's id is unique only within its source: the pair is what dedupes.
    if message_id is not None:
        key = dedupe.key(namespace, "message", message_id)
    else:
        key = dedupe.key(namespace, "ce", cloudevent["source"], cloudevent["id"])
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


def read_events(namespace: str = dedupe.EVENTS, *, signed: bool = True) -> list[Event]:
    """Every event the request carries, each checked; nothing is stored yet.

    ``namespace`` is the sender's dedupe namespace; ``signed``: a binary-mode event's
    dedupe key is the signed message id (else the CloudEvent's ``source`` + ``id``).
    """
    mimetype = request.mimetype
    if mimetype == STRUCTURED:
        return [to_event(parse_json(raw_body()), namespace=namespace)]
    if mimetype == BATCH:
        batch = parse_json(raw_body())
        if not isinstance(batch, list):
            raise InvalidInput("body", "a batch is a JSON array of CloudEvents")
        if len(batch) > MAX_BATCH:
            raise InvalidInput("body", f"a batch holds at most {MAX_BATCH} events")
        events = []
        for index, item in enumerate(batch):
            try:
                events.append(to_event(item, namespace=namespace))
            except InvalidInput as exc:
                raise InvalidInput(f"[{index}].{exc.field}", exc.reason) from None
        return events
    headers = lower_headers()
    message_id = verify.message_id(headers) if signed else None
    return [to_event(binary_attributes(headers), message_id, namespace)]


def sender_namespace(headers: dict[str, str]) -> str | None:
    """Authenticate the request; the dedupe namespace of a token's sender, None when signed.

    A signature is checked when one is sent; else a token (bearer or ``X-Api-Key``)
    names its sender. With neither: 401, unless ``EDA_ALLOW_UNSIGNED`` lets an unsigned
    request in (development, with no secret set).
    """
    settings = services().settings
    offered = verify.offered_token(headers)
    if offered is not None and not verify.signed(headers):
        tokens = {name: token.get_secret_value() for name, token in settings.events_tokens.items()}
        return dedupe.events_sender(verify.token_holder(offered, tokens))
    unsigned_allowed = settings.allow_unsigned and settings.webhook_secret(EVENTS.name) is None
    if not verify.signed(headers) and not unsigned_allowed:
        raise SignatureRejected(
            "send a Standard Webhooks signature (EDA_WEBHOOK_SECRET_EVENTS), "
            "Authorization: Bearer <token> or X-Api-Key: <token> (EDA_EVENTS_TOKEN_<SENDER>)"
        )
    authenticate(EVENTS, raw_body(), headers)
    return None


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
    namespace = sender_namespace(lower_headers())
    batched = request.mimetype == BATCH
    events = read_events(namespace or dedupe.EVENTS, signed=namespace is None)
    results = [publish(event) for event in events]
    if not batched:
        return published(results[0])
    response = jsonify(
        {"events": [{"event_id": r.event_id, "duplicate": r.duplicate} for r in results]}
    )
    response.status_code = 202 if any(not r.duplicate for r in results) else 200
    return response
