"""JSON answers: storing an event and saying so, and every error as a JSON body.

The status codes follow one rule each: 202 stored (200 for a duplicate, with
the original id), 400 the input is wrong, 401 not signed or not authorised,
404 nothing there, 413 too large, 415 wrong content type, 500 this server is
misconfigured (no broker: retrying cannot help), 503 try again later (with
``Retry-After``). A 2xx is only ever sent after the store write returned.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import redis
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from eda import traces
from eda.errors import EdaError, InvalidInput, NoBroker, NotFound, StoreUnavailable
from eda.event import Event
from eda.store import Published
from webhooks.extension import services
from webhooks.verify import RequestHeaders, SecretMisconfigured, SignatureRejected

log = logging.getLogger(__name__)

#: Seconds a client is asked to wait before trying again after a 503.
RETRY_AFTER_SECONDS = 5


def error(status: int, code: str, message: str, **extra: Any) -> Response:
    """A JSON error body: ``{"error": code, "message": message, ...}``."""
    return _json(status, {"error": code, "message": message, **extra})


def published(result: Published) -> Response:
    """202 with the new event's id, or 200 with the original id for a duplicate."""
    if result.duplicate:
        return _json(200, {"event_id": result.event_id, "duplicate": True})
    return _json(202, {"event_id": result.event_id})


def publish(event: Event) -> Published:
    """Store (and dispatch, when the core has a broker) one event.

    Raises StoreUnavailable (503) when Redis is unreachable, and 413 when the
    payload is over the store's limit (the only InvalidInput the store raises).
    """
    try:
        if traces.enabled():
            carried = traces.request_context(RequestHeaders(request.environ))
            with traces.ingest(event, carried) as traced:
                return services().core.publish_event(traced)
        return services().core.publish_event(event)
    except InvalidInput as exc:
        if exc.field == "payload":
            raise RequestEntityTooLarge(f"payload {exc.reason}") from None
        raise


#: Flask's compact JSON (``jsonify`` outside debug), without its per-call set-up.
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _json(status: int, body: Any) -> Response:
    return Response(f"{_ENCODER.encode(body)}\n", status, mimetype="application/json")


def _unavailable(exc: Exception) -> Response:
    log.warning("the event store is unreachable: %s", exc)
    response = error(503, "store_unavailable", "the event store is unreachable; try again later")
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def _http(exc: HTTPException) -> Response:
    code = (exc.name or "error").lower().replace(" ", "_")
    response = error(exc.code or 500, code, exc.description or code)
    for name, value in exc.get_headers():  # Allow on 405, for one
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def _unexpected(exc: Exception) -> Response:
    log.exception("unexpected error", exc_info=exc)
    return error(500, "internal_error", "an unexpected error occurred; see the server log")


def _misconfigured(exc: SecretMisconfigured) -> Response:
    log.error("a webhook secret is misconfigured: %s", exc)
    return error(500, "misconfigured", "the secret configured for this source is not usable")


def _rejected(exc: SignatureRejected) -> Response:
    log.info("%s refused: %s", request.path, exc.reason)
    return error(401, "unauthorized", exc.reason)


def _no_broker(exc: NoBroker) -> Response:
    log.error("%s: %s", request.path, exc)
    return error(500, "no_broker", f"this server is misconfigured: {exc}")


def _not_dispatched(exc: EdaError) -> Response:
    # What remains of EdaError once input, store and configuration errors are handled:
    # the broker did not take a delivery (admin.DispatchFailed).
    response = error(503, "broker_unavailable", str(exc))
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def register(app: Flask) -> None:
    """Answer every error of ``app`` with a JSON body."""
    app.register_error_handler(NotFound, lambda e: _json(404, e.as_dict()))
    app.register_error_handler(InvalidInput, lambda e: _json(400, e.as_dict()))
    app.register_error_handler(StoreUnavailable, _unavailable)
    app.register_error_handler(redis.ConnectionError, _unavailable)
    app.register_error_handler(redis.TimeoutError, _unavailable)
    app.register_error_handler(SignatureRejected, _rejected)
    app.register_error_handler(SecretMisconfigured, _misconfigured)
    app.register_error_handler(NoBroker, _no_broker)
    app.register_error_handler(EdaError, _not_dispatched)
    app.register_error_handler(HTTPException, _http)
    app.register_error_handler(Exception, _unexpected)
