"""``GET /healthz`` (the process answers) and ``GET /readyz`` (Redis and the broker answer)."""

from __future__ import annotations

import logging

import redis
from flask import Blueprint, Response, jsonify

from webhooks.extension import services

log = logging.getLogger(__name__)

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


def _redis_state() -> str:
    try:
        services().core.redis.ping()
    except redis.RedisError as exc:
        log.warning("readiness: Redis does not answer: %s", exc)
        return "unreachable"
    return "ok"


def _broker_state() -> str:
    enqueuer = services().core.enqueuer
    if enqueuer is None:
        return "not configured"  # a store-only app: events wait for a dispatching process
    try:
        enqueuer.queue_lengths()
    except Exception as exc:
        log.warning("readiness: the broker does not answer: %s", type(exc).__name__)
        return "unreachable"
    return "ok"


def _relay_state() -> dict[str, object] | str:
    try:
        return services().core.relay_state()
    except Exception as exc:
        log.warning("readiness: the relay's queue cannot be read: %s", type(exc).__name__)
        return "unreachable"


@blueprint.get("/readyz")
def readyz() -> Response:
    """200 when the event store and the broker answer, 503 (with what failed) otherwise.

    The relay's queue (length, oldest event's age, relays alive) is reported too, but
    does not make the web unready: what it stores waits for a relay or the sweeper.
    """
    checks = {"redis": _redis_state(), "broker": _broker_state()}
    ready = "unreachable" not in checks.values()
    response = jsonify(
        {"status": "ready" if ready else "unavailable", "checks": checks, "relay": _relay_state()}
    )
    response.status_code = 200 if ready else 503
    if not ready:
        response.headers["Retry-After"] = "5"
    return response
