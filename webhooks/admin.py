"""The admin API under ``/api/``: a thin HTTP face over :class:`eda.core.Core`.

Every endpoint reads its arguments, calls one core method and returns what it
returned as JSON; the rules live in the core, so the Gantz scripts, the CLI and
this API cannot drift apart. Access needs ``Authorization: Bearer
<EDA_ADMIN_TOKEN>``; with no token configured the API is off (403), never open.
The OpenAPI document (``/api/openapi.json``) is public: it describes, it holds no data.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from flask import Blueprint, Response, jsonify, request
from werkzeug.exceptions import UnsupportedMediaType

from eda.errors import EdaError, InvalidInput, NotFound
from eda.event import Event
from eda.summaries import UNBOUNDED, history_page
from eda.times import parse_bound
from webhooks import dedupe
from webhooks.answers import error, publish, published
from webhooks.extension import services
from webhooks.ingest import parse_json, raw_body
from webhooks.mapping import unrouted_types
from webhooks.openapi import document

log = logging.getLogger(__name__)

#: The variable holding the bearer token; unset means the admin API is off.
TOKEN_VARIABLE = "EDA_ADMIN_TOKEN"  # noqa: S105 (a name, not a secret)
#: Fields a caller may give when publishing through the API.
PUBLISH_FIELDS = (
    *("type", "payload", "source", "subject"),
    *("correlation_id", "causation_id", "dedupe_key"),
)
T = TypeVar("T")

blueprint = Blueprint("admin", __name__, url_prefix="/api")


class DispatchFailed(EdaError):
    """The broker did not take a delivery (answered 503)."""


@blueprint.before_request
def require_token() -> Response | None:
    """Let a request through only with the configured bearer token."""
    if request.endpoint == "admin.openapi":
        return None
    token = services().settings.admin_token
    if token is None:
        return error(403, "admin_api_disabled", f"the admin API is off: set {TOKEN_VARIABLE}")
    scheme, _, offered = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        offered.strip().encode(), token.get_secret_value().encode()
    ):
        response = error(401, "unauthorized", "send Authorization: Bearer <token>")
        response.headers["WWW-Authenticate"] = 'Bearer realm="eda-admin"'
        return response
    return None


# -- reading arguments ------------------------------------------------------------------------


def _text(name: str, source: dict[str, Any] | None = None) -> str | None:
    value = (request.args if source is None else source).get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidInput(name, "must be a string")
    return value


def _int(name: str, default: int, source: dict[str, Any] | None = None) -> int:
    value = (request.args if source is None else source).get(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise InvalidInput(name, "must be a whole number")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidInput(name, "must be a whole number") from None


def _time(name: str, source: dict[str, Any] | None = None) -> datetime | str | None:
    text = _text(name, source)
    return None if text is None else parse_bound(text, field=name)


def _body() -> dict[str, Any]:
    """The JSON object sent (an empty body is an empty object)."""
    body = raw_body()
    if not body:
        return {}
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("send application/json")
    document = parse_json(body)
    if not isinstance(document, dict):
        raise InvalidInput("body", "must be a JSON object")
    return document


def _dispatching(call: Callable[[], T]) -> T:
    """Run a call that enqueues; a broker failure becomes DispatchFailed (503)."""
    try:
        return call()
    except EdaError:
        raise
    except Exception as exc:
        log.exception("the broker did not take a delivery")
        raise DispatchFailed(f"the broker did not take the delivery: {type(exc).__name__}") from exc


# -- events -----------------------------------------------------------------------------------


@blueprint.get("/events")
def list_events() -> Response:
    """Summaries of stored events by type and time, newest first unless order=oldest.

    ``next_cursor`` (passed back as ``cursor``) continues after the page; GET
    /api/events/<id> gives one event's full record.
    """
    order = request.args.get("order", "newest")
    if order not in ("newest", "oldest"):
        raise InvalidInput("order", "must be 'newest' or 'oldest'")
    page = history_page(
        services().core,
        _text("type"),
        _time("since"),
        _time("until"),
        limit=_int("limit", 100),
        newest_first=order == "newest",
        cursor=_text("cursor"),
        max_bytes=UNBOUNDED,
    )
    return jsonify(page.as_dict())


@blueprint.get("/events/<event_id>")
def get_event(event_id: str) -> Response:
    """The event with its deliveries and its agent runs' transcripts (``?transcript=full``)."""
    core = services().core
    shown = core.get_event(event_id).as_dict()
    full = _text("transcript") == "full"
    shown["transcripts"] = core.transcripts(event_id, full=full)
    return jsonify(shown)


@blueprint.post("/events")
def publish_event() -> Response:
    """Publish an event (202), or find its dedupe key already used (200)."""
    body = _body()
    unknown = sorted(set(body) - set(PUBLISH_FIELDS))
    if unknown:
        raise InvalidInput(
            unknown[0], f"is not a field of a published event ({', '.join(PUBLISH_FIELDS)})"
        )
    key = body.get("dedupe_key")
    if isinstance(key, str) and key.strip():  # apart from every sender's keys
        body["dedupe_key"] = dedupe.key(dedupe.ADMIN_API, key)
    event = Event.create(**{"source": "admin-api", **body})
    return published(publish(event))


@blueprint.post("/events/<event_id>/acknowledge")
def acknowledge(event_id: str) -> Response:
    body = _body()
    status = _text("status", body) or "processed"
    previous = services().core.acknowledge(event_id, status, _text("reason", body) or "")
    return jsonify({"event_id": event_id, "status": status, "previous_status": previous})


@blueprint.post("/events/<event_id>/retry")
def retry_event(event_id: str) -> Response:
    return jsonify({"retried": _dispatching(lambda: services().core.retry_event(event_id))})


# -- dead letters -----------------------------------------------------------------------------


@blueprint.get("/dead-letters")
def list_dead_letters() -> Response:
    page = services().core.dead_letter_page(_int("limit", 50), _text("type"), _text("handler"))
    return jsonify(page.as_dict())


@blueprint.get("/dead-letters/<path:letter_id>")
def get_dead_letter(letter_id: str) -> Response:
    return jsonify(services().core.dead_letter(letter_id).as_dict())


@blueprint.post("/dead-letters/<path:letter_id>/retry")
def retry_dead_letter(letter_id: str) -> Response:
    return jsonify(_dispatching(lambda: services().core.retry_dead_letter(letter_id)))


@blueprint.post("/dead-letters/retry-batch")
def retry_dead_letters() -> Response:
    body = _body()
    until_empty = body.get("until_empty", False)
    if not isinstance(until_empty, bool):
        raise InvalidInput("until_empty", "must be true or false")
    report = _dispatching(
        lambda: services().core.retry_dead_letters(
            _text("type", body),
            _text("handler", body),
            _int("limit", 1000, body),
            until_empty=until_empty,
        )
    )
    return jsonify({"retried": report.retried, "left": report.left})


@blueprint.post("/dead-letters/<path:letter_id>/discard")
def discard_dead_letter(letter_id: str) -> Response:
    reason = _text("reason", _body()) or ""
    letter = services().core.discard_dead_letter(letter_id, reason)
    return jsonify({"discarded": letter.as_dict(), "reason": reason})


# -- replay, subscriptions, stats -------------------------------------------------------------


@blueprint.post("/replay")
def replay() -> Response:
    """Re-dispatch stored events; ``dry_run: true`` only says what would be replayed."""
    body = _body()
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise InvalidInput("dry_run", "must be true or false")
    report = _dispatching(
        lambda: services().core.replay(
            _text("type", body),
            _time("since", body),
            _time("until", body),
            _int("limit", 1000, body),
            _text("handler", body),
            dry_run,
        )
    )
    return jsonify(report.as_dict())


@blueprint.get("/subscriptions")
def list_subscriptions() -> Response:
    return jsonify({"subscriptions": services().core.subscriptions()})


@blueprint.post("/subscriptions")
def subscribe() -> Response:
    """Route event types (a pattern or a list) to a handler from now on."""
    body = _body()
    patterns = body.get("event_types")
    patterns = [patterns] if isinstance(patterns, str) else patterns
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        raise InvalidInput("event_types", "must be a pattern or a list of patterns")
    created = services().core.subscribe(patterns, _text("handler", body) or "")
    response = jsonify({"subscriptions": created})
    response.status_code = 201
    return response


@blueprint.delete("/subscriptions")
def unsubscribe() -> Response:
    pattern, handler = _text("pattern") or "", _text("handler") or ""
    if not services().core.unsubscribe(pattern, handler):
        raise NotFound("subscription", f"no subscription of {handler!r} to {pattern!r}")
    return jsonify({"removed": {"pattern": pattern, "handler": handler}})


@blueprint.get("/stats")
def stats() -> Response:
    found = services().core.stats()
    return jsonify({**found, "unrouted_types": unrouted_types(services().core, services().types)})


@blueprint.get("/openapi.json")
def openapi() -> Response:
    return jsonify(document())
