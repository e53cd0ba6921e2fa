"""The OpenAPI 3.1 document of the HTTP app, served at ``/api/openapi.json``.

Written out by hand (it is documentation), with small builders for the parts
that repeat; a test checks that every route of the app is described here.
"""

from __future__ import annotations

from typing import Any

#: Answers every endpoint may give, by status.
_ERRORS = {
    "400": "The input is wrong; `field` says where.",
    "401": "A missing or wrong signature or token.",
    "503": "The event store (or, to dispatch, the broker) is unreachable; see Retry-After.",
}
_TIME = "An RFC 3339 time such as 2026-01-31T09:30:00Z, or a duration ago such as 15m, 2h, 7d."


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _query(name: str, description: str, kind: str = "string") -> dict[str, Any]:
    return {"name": name, "in": "query", "description": description, "schema": {"type": kind}}


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _operation(
    summary: str,
    answers: dict[str, dict[str, Any]],
    *,
    parameters: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    tag: str = "admin",
    errors: tuple[str, ...] = ("400", "401", "503"),
) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": dict(answers)}
    for status in errors:
        operation["responses"][status] = _json(_ref("Error"), _ERRORS[status])
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": body}},
        }
    if tag != "admin":
        operation["security"] = []
    return operation


def _object(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


def _list_of(key: str, item: dict[str, Any]) -> dict[str, Any]:
    return _object({key: {"type": "array", "items": item}}, (key,))


_ANY_OBJECT: dict[str, Any] = {"type": "object", "additionalProperties": True}
_STRING: dict[str, Any] = {"type": "string"}
_ACCEPTED = {
    "202": _json(_ref("Accepted"), "Stored durably; dispatch follows."),
    "200": _json(_ref("Accepted"), "A duplicate delivery: the original event's id."),
}
_WEBHOOK_ERRORS = ("400", "401", "503")


def _schemas() -> dict[str, Any]:
    return {
        "Error": _object(
            {"error": _STRING, "message": _STRING, "field": _STRING}, ("error", "message")
        ),
        "Accepted": _object({"event_id": _STRING, "duplicate": {"type": "boolean"}}, ("event_id",)),
        "Event": _object(
            {
                "id": _STRING,
                "type": _STRING,
                "source": _STRING,
                "time": {"type": "string", "format": "date-time"},
                "payload": {},
                "subject": _STRING,
                "correlation_id": _STRING,
                "causation_id": _STRING,
                "dedupe_key": _STRING,
                "status": _STRING,
                "stream_id": _STRING,
                "deliveries": {"type": "array", "items": _ANY_OBJECT},
            },
            ("id", "type", "source", "time", "status"),
        ),
        "NewEvent": _object(
            {
                "type": _STRING,
                "payload": {},
                "source": _STRING,
                "subject": _STRING,
                "correlation_id": _STRING,
                "causation_id": _STRING,
                "dedupe_key": _STRING,
            },
            ("type",),
        ),
        "DeadLetter": _object(
            {
                "id": _STRING,
                "event_id": _STRING,
                "event_type": _STRING,
                "handler": _STRING,
                "error_class": _STRING,
                "error": _STRING,
                "traceback": _STRING,
                "attempts": {"type": "integer"},
                "first_failure_at": _STRING,
                "last_failure_at": _STRING,
                "task_id": _STRING,
            },
            ("id", "event_id", "handler"),
        ),
        "Subscription": _object({"pattern": _STRING, "handler": _STRING, "created_at": _STRING}),
        "Filter": _object({"type": _STRING, "handler": _STRING, "limit": {"type": "integer"}}),
    }


def _event_paths() -> dict[str, Any]:
    event_id = _path("event_id")
    return {
        "/api/events": {
            "get": _operation(
                "List stored events",
                {
                    "200": _json(
                        _list_of("events", _ref("Event")), "Events, newest first by default."
                    )
                },
                parameters=[
                    _query("type", "Only events of this type."),
                    _query("since", _TIME),
                    _query("until", _TIME),
                    _query("limit", "At most this many (1 to 10000, default 100).", "integer"),
                    _query("order", "newest (default) or oldest first."),
                ],
            ),
            "post": _operation("Publish an event", _ACCEPTED, body=_ref("NewEvent")),
        },
        "/api/events/{event_id}": {
            "get": _operation(
                "One event with its deliveries and its agent runs' transcripts",
                {
                    "200": _json(_ref("Event"), "The event."),
                    "404": _json(_ref("Error"), "No such event."),
                },
                parameters=[
                    event_id,
                    _query("transcript", "compact (default) or full: prompt, messages, results."),
                ],
            )
        },
        "/api/events/{event_id}/acknowledge": {
            "post": _operation(
                "Set an event's status by hand",
                {"200": _json(_ANY_OBJECT, "The new and the previous status.")},
                parameters=[event_id],
                body=_object({"status": _STRING, "reason": _STRING}),
            )
        },
        "/api/events/{event_id}/retry": {
            "post": _operation(
                "Retry every dead delivery of an event",
                {"200": _json(_list_of("retried", _ANY_OBJECT), "The deliveries enqueued again.")},
                parameters=[event_id],
            )
        },
    }


def _dead_letter_paths() -> dict[str, Any]:
    letter_id = _path("letter_id")
    letter = {
        "200": _json(_ref("DeadLetter"), "The dead letter."),
        "404": _json(_ref("Error"), "No such dead letter."),
    }
    return {
        "/api/dead-letters": {
            "get": _operation(
                "List dead letters, newest first",
                {"200": _json(_list_of("dead_letters", _ref("DeadLetter")), "Dead letters.")},
                parameters=[
                    _query("type", "Only dead letters of this event type."),
                    _query("handler", "Only dead letters of this handler."),
                    _query("limit", "At most this many (default 50).", "integer"),
                ],
            )
        },
        "/api/dead-letters/{letter_id}": {
            "get": _operation("One dead letter", letter, parameters=[letter_id])
        },
        "/api/dead-letters/{letter_id}/retry": {
            "post": _operation(
                "Retry one dead letter with a fresh retry budget",
                {"200": _json(_ANY_OBJECT, "The delivery enqueued again.")},
                parameters=[letter_id],
            )
        },
        "/api/dead-letters/{letter_id}/discard": {
            "post": _operation(
                "Discard a dead letter for good",
                {"200": _json(_ANY_OBJECT, "The dead letter discarded.")},
                parameters=[letter_id],
                body=_object({"reason": _STRING}, ("reason",)),
            )
        },
        "/api/dead-letters/retry-batch": {
            "post": _operation(
                "Retry a filtered batch of dead letters",
                {
                    "200": _json(
                        _object(
                            {
                                "retried": {"type": "array", "items": _ANY_OBJECT},
                                "left": {"type": "integer"},
                            },
                            ("retried", "left"),
                        ),
                        "The deliveries enqueued again, and the matching dead letters left.",
                    )
                },
                body=_object(
                    {
                        "type": _STRING,
                        "handler": _STRING,
                        "limit": {"type": "integer"},
                        "until_empty": {"type": "boolean"},
                    }
                ),
            )
        },
    }


def _operations_paths() -> dict[str, Any]:
    replay_body = _object(
        {
            "type": _STRING,
            "since": {"type": "string", "description": _TIME},
            "until": {"type": "string", "description": _TIME},
            "limit": {"type": "integer"},
            "handler": _STRING,
            "dry_run": {"type": "boolean"},
        }
    )
    return {
        "/api/replay": {
            "post": _operation(
                "Replay stored events (dry_run says what would be replayed)",
                {"200": _json(_ANY_OBJECT, "The replay report.")},
                body=replay_body,
            )
        },
        "/api/subscriptions": {
            "get": _operation(
                "List run-time subscriptions",
                {"200": _json(_list_of("subscriptions", _ref("Subscription")), "Subscriptions.")},
            ),
            "post": _operation(
                "Subscribe a handler to event types",
                {"201": _json(_list_of("subscriptions", _ref("Subscription")), "Created.")},
                body=_object(
                    {
                        "event_types": {"type": ["array", "string"], "items": _STRING},
                        "handler": _STRING,
                    },
                    ("event_types", "handler"),
                ),
            ),
            "delete": _operation(
                "Remove a subscription",
                {
                    "200": _json(_ANY_OBJECT, "Removed."),
                    "404": _json(_ref("Error"), "No such subscription."),
                },
                parameters=[_query("pattern", "The pattern."), _query("handler", "The handler.")],
            ),
        },
        "/api/stats": {
            "get": _operation(
                "Counts by type and status, lanes and dead letters",
                {"200": _json(_ANY_OBJECT, "Statistics.")},
            )
        },
        "/api/openapi.json": {
            "get": _operation(
                "This document", {"200": _json(_ANY_OBJECT, "OpenAPI 3.1.")}, tag="meta", errors=()
            )
        },
    }


def _ingest_paths() -> dict[str, Any]:
    raw = {"required": True, "content": {"application/json": {"schema": {}}}}
    signed = {
        "/webhooks/github": "GitHub: X-Hub-Signature-256 with GITHUB_WEBHOOK_SECRET.",
        "/webhooks/stripe": "Stripe: Stripe-Signature with STRIPE_WEBHOOK_SECRET.",
        "/webhooks/slack": "Slack: X-Slack-Signature with SLACK_SIGNING_SECRET.",
        "/webhooks/{source}": "Other sources: Standard Webhooks with EDA_WEBHOOK_SECRET_<SOURCE>.",
        "/events": "CloudEvents 1.0 (binary, structured, batch): Standard Webhooks with "
        "EDA_WEBHOOK_SECRET_EVENTS.",
    }
    paths: dict[str, Any] = {}
    for path, summary in signed.items():
        operation = _operation(summary, _ACCEPTED, tag="webhooks", errors=_WEBHOOK_ERRORS)
        operation["requestBody"] = raw
        for status, text in (("413", "Too large."), ("415", "Wrong content type.")):
            operation["responses"][status] = _json(_ref("Error"), text)
        if "{source}" in path:
            operation["parameters"] = [_path("source")]
        paths[path] = {"post": operation}
    for path, summary in (
        ("/healthz", "The process is up"),
        ("/readyz", "Redis and the broker answer"),
    ):
        paths[path] = {
            "get": _operation(
                summary, {"200": _json(_ANY_OBJECT, "Up.")}, tag="meta", errors=("503",)
            )
        }
    return paths


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the admin API and the webhook endpoints."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Event-driven agents: webhooks and admin API",
            "version": "1",
            "description": "Admin calls need `Authorization: Bearer <EDA_ADMIN_TOKEN>`; "
            "with no token configured the admin API is off (403).",
        },
        "paths": {
            **_ingest_paths(),
            **_event_paths(),
            **_dead_letter_paths(),
            **_operations_paths(),
        },
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
