"""``POST /webhooks/<source>``: verify, parse, map, store, answer.

The order matters: the body is read raw and bounded (413), its content type
checked (415), its signature verified over those raw bytes (401), and only
then parsed (400), mapped to an event type (400) and stored (503 or 202/200).
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import parse_qs

from flask import Blueprint, Response, request
from werkzeug.exceptions import RequestEntityTooLarge, UnsupportedMediaType

from eda.errors import InvalidInput
from eda.event import Event
from eda.settings import Settings
from webhooks import dedupe
from webhooks.answers import publish, published
from webhooks.extension import services
from webhooks.sources import Reply, Source, source_for
from webhooks.verify import Headers, RequestHeaders, SignatureRejected

log = logging.getLogger(__name__)

blueprint = Blueprint("webhooks", __name__)


def raw_body(limit: int | None = None) -> bytes:
    """The request body as sent, bounded by ``webhook_max_body_bytes`` (413 past it).

    The app lets a body stream one byte past the limit (its ``MAX_CONTENT_LENGTH`` is the
    limit + 1): a chunked body has no Content-Length to refuse it by, and werkzeug stops
    reading at its maximum without saying whether more was sent, so the byte past the
    limit is what tells a body over it from one that fits.
    """
    body = request.get_data(cache=True)
    if limit is None:
        limit = services().settings.webhook_max_body_bytes
    if len(body) > limit:
        raise RequestEntityTooLarge(f"the body is over {limit} bytes")
    return body


def lower_headers() -> dict[str, str]:
    """Every header, by its lower-case name (what reads them all: a CloudEvent's ``ce-*``)."""
    return {name.lower(): value for name, value in request.headers.items()}


def media_type(accepted: tuple[str, ...]) -> str:
    """The request's media type when ``accepted`` (or any ``+json`` for JSON); else 415."""
    mimetype = request.mimetype
    if mimetype in accepted or ("application/json" in accepted and mimetype.endswith("+json")):
        return mimetype
    raise UnsupportedMediaType(f"send {' or '.join(accepted)}, not {mimetype or 'no content type'}")


def authenticate(
    source: Source, body: bytes, headers: Headers, settings: Settings | None = None
) -> None:
    """Verify the signature with the source's secret; refuse unsigned unless allowed."""
    settings = settings or services().settings
    secret = settings.webhook_secret(source.name)
    if secret is not None:
        source.verify(body, headers, secret, settings.signature_tolerance)
        return
    if not settings.allow_unsigned:
        raise SignatureRejected(
            f"no secret is configured for {source.name} ({source.secret_variable}); "
            "unsigned requests are refused"
        )


def parse_json(body: bytes, mimetype: str = "application/json") -> Any:
    """The body as JSON (a form's ``payload`` field for form posts); InvalidInput when not."""
    try:
        if mimetype == "application/x-www-form-urlencoded":
            fields = parse_qs(body.decode(), strict_parsing=True)
            body = fields["payload"][0].encode()
        return json.loads(body)
    except (KeyError, IndexError):
        raise InvalidInput("body", "a form post carries the JSON in its 'payload' field") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput("body", f"is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidInput("body", "is nested too deeply") from None


@blueprint.post("/webhooks/<name>")
def receive(name: str) -> Response | tuple[dict[str, Any], int]:
    """Accept one delivery from a sender."""
    source = source_for(name)
    found = services()
    body = raw_body(found.settings.webhook_max_body_bytes)
    mimetype = media_type(source.media_types)
    # Read by name (case-insensitive): no copy of every header.
    headers = RequestHeaders(request.environ)
    authenticate(source, body, headers, found.settings)
    document = parse_json(body, mimetype)
    meaning = source.read(document, headers, found.types, source.name)
    if isinstance(meaning, Reply):
        return meaning.body, meaning.status
    namespace = dedupe.webhooks(source.name)
    event = Event.create(
        type=meaning.event_type,
        source=source.name,
        payload=meaning.payload,
        dedupe_key=dedupe.key(namespace, "id", meaning.delivery_id)
        if meaning.delivery_id is not None
        else dedupe.signed_body(namespace, body),
        subject=meaning.subject,
    )
    result = publish(event)
    # A sender's retry is worth a line; each stored webhook only at DEBUG, as each
    # successful delivery: the store keeps them all, and a line each cost ingest a tenth.
    if result.duplicate:
        log.info("webhook %s was a duplicate of %s", source.name, result.event_id)
    else:
        log.debug("webhook %s stored as %s %s", source.name, event.type, result.event_id)
    return published(result)
