"""The OpenAPI 3.1 document of the HTTP app, served at ``/api/openapi.json``.

Written out by hand (it is documentation), with small builders for the parts
that repeat. Every operation has an ``operationId`` and every status the app
answers with; the tests check that every route is described, and that a client
generated from this document (openapi-python-client) calls every operation and
parses every answer of a real server, each checked against its schema.
"""

from __future__ import annotations

from typing import Any

from eda.delivery import Status
from eda.store import ACK_STATUSES

_TIME = "An RFC 3339 time such as 2026-01-31T09:30:00Z, or a duration ago such as 15m, 2h, 7d."
#: What each error status means, wherever it is answered.
_ERRORS = {
    "400": "The input is wrong; `field` says where.",
    "401": "A missing or wrong signature, token or bearer token.",
    "403": "The admin API is off: EDA_ADMIN_TOKEN is not set.",
    "404": "Nothing of that id is stored.",
    "413": "The body is over EDA_WEBHOOK_MAX_BODY_BYTES.",
    "415": "The content type is not one this operation takes.",
    "500": "This server is misconfigured (`no_broker`: nothing to dispatch with; "
    "`misconfigured`: the source's secret is not usable); retrying cannot help.",
    "503": "The event store or the broker is unreachable; see Retry-After.",
}
#: Errors of every admin call, of a call with a body, and of a call that enqueues.
_ADMIN = ("400", "401", "403", "503")
_WITH_BODY = ("413", "415")
_ENQUEUES = ("500",)
_WEBHOOK = ("400", "401", "413", "415", "500", "503")


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "description": description,
        "schema": schema or {"type": "string"},
    }


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _operation(
    operation_id: str,
    summary: str,
    answers: dict[str, dict[str, Any]],
    *,
    parameters: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    tag: str = "admin",
    errors: tuple[str, ...] = _ADMIN,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "tags": [tag],
        "responses": dict(answers),
    }
    if body is not None:
        errors = (*errors, *_WITH_BODY)
        operation["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": body}},
        }
    for status in sorted(set(errors)):
        operation["responses"].setdefault(status, _json(_ref("Error"), _ERRORS[status]))
    if parameters:
        operation["parameters"] = parameters
    if tag != "admin":
        operation["security"] = []
    return operation


def _object(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


def _array(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item}


def _map(value: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": value}


def _nullable(kind: str) -> dict[str, Any]:
    return {"type": [kind, "null"]}


_STRING: dict[str, Any] = {"type": "string"}
_INTEGER: dict[str, Any] = {"type": "integer"}
_NUMBER: dict[str, Any] = {"type": "number"}
_BOOLEAN: dict[str, Any] = {"type": "boolean"}
_ANY: dict[str, Any] = {}
_ANY_OBJECT: dict[str, Any] = {"type": "object", "additionalProperties": True}


def _event_schemas() -> dict[str, Any]:
    envelope = {
        "id": _STRING,
        "type": _STRING,
        "source": _STRING,
        "time": {"type": "string", "format": "date-time"},
        "payload": _ANY,
        "subject": _STRING,
        "correlation_id": _STRING,
        "causation_id": _STRING,
        "dedupe_key": _STRING,
        "origin_id": {"type": "string", "description": "The sender's own id (a CloudEvent's)."},
        "attributes": {
            "type": "object",
            "description": "CloudEvents attributes and extensions the envelope has no field for.",
            "additionalProperties": {"type": ["string", "integer", "boolean"]},
        },
        "payload_encoding": {"type": "string", "enum": ["base64"]},
    }
    attempt = _object(
        {
            "number": _INTEGER,
            "task_id": _STRING,
            "worker": _nullable("string"),
            "started_at": _nullable("string"),
            "starts": _INTEGER,
            "ended_at": _nullable("string"),
            "duration_ms": _nullable("number"),
            "status": _nullable("string"),
            "reason": _nullable("string"),
            "error": {
                "oneOf": [
                    _object(
                        {"message": _STRING, "class": _STRING, "traceback": _STRING},
                        ("message",),
                    ),
                    {"type": "null"},
                ]
            },
            "outcome": _ANY,
        },
        ("number",),
    )
    note = _object(
        {"status": _STRING, "at": _STRING, "reason": _STRING, "after": _INTEGER},
        ("status", "at"),
    )
    return {
        "NewEvent": _object(
            {
                **{name: envelope[name] for name in ("type", "payload", "source", "subject")},
                **{name: _STRING for name in ("correlation_id", "causation_id", "dedupe_key")},
            },
            ("type",),
        ),
        "EventSummary": _object(
            {
                "id": _STRING,
                "type": _STRING,
                "source": _STRING,
                "time": envelope["time"],
                "status": _STRING,
                "handlers": {**_map(_STRING), "description": "Each handler's delivery status."},
            },
            ("id", "type", "source", "time", "status", "handlers"),
        ),
        "EventPage": _object(
            {
                "events": _array(_ref("EventSummary")),
                "next_cursor": {
                    "type": ["string", "null"],
                    "description": "Pass as `cursor` for the next page; null: nothing more.",
                },
            },
            ("events", "next_cursor"),
        ),
        "Event": _object(
            {
                **envelope,
                "status": _STRING,
                "stream_id": _STRING,
                "acknowledged": _ANY_OBJECT,
                "blocked": _STRING,
                "depth": _INTEGER,
                "deliveries": _array(_ref("Delivery")),
                "transcripts": {
                    **_map(_array(_ref("Transcript"))),
                    "description": "Each agent's runs, by handler.",
                },
            },
            ("id", "type", "source", "time", "status", "stream_id", "deliveries", "transcripts"),
        ),
        "Delivery": _object(
            {
                "handler": _STRING,
                "status": {"type": "string", "enum": [str(status) for status in Status]},
                "attempts": _INTEGER,
                "task_id": _nullable("string"),
                "replay": _BOOLEAN,
                "enqueue_failed": _BOOLEAN,
                "error": _nullable("string"),
                "outcome": _ANY,
                "created_at": _nullable("string"),
                "updated_at": _nullable("string"),
                "totals": {
                    **_map(_NUMBER),
                    "description": "Runs, attempts, and an agent's turns, tool calls and tokens.",
                },
                "history": _array(note),
                "runs": _array(
                    _object(
                        {
                            "number": _INTEGER,
                            "reason": _STRING,
                            "at": _STRING,
                            "replay": _BOOLEAN,
                            "dropped_attempts": _INTEGER,
                            "notes": _array(note),
                            "attempts": _array(attempt),
                        },
                        ("number", "attempts"),
                    )
                ),
                "dropped_runs": _INTEGER,
            },
            ("handler", "status"),
        ),
        "Transcript": _object(
            {
                "run": _INTEGER,
                "sent": _ANY_OBJECT,
                "turns": _array(_ANY_OBJECT),
                "totals": _map(_INTEGER),
                "entries": _array(_ANY_OBJECT),
            },
            ("run", "sent", "turns", "totals"),
        ),
    }


def _schemas() -> dict[str, Any]:
    accepted = _object({"event_id": _STRING, "duplicate": _BOOLEAN}, ("event_id",))
    redelivered = _object(
        {"event_id": _STRING, "handler": _STRING, "task_id": _STRING},
        ("event_id", "handler", "task_id"),
    )
    relay = _object(
        {"queue": _INTEGER, "oldest_age_s": _NUMBER, "alive": _array(_STRING)},
        ("queue", "oldest_age_s", "alive"),
    )
    return {
        "Error": _object(
            {"error": _STRING, "message": _STRING, "field": _STRING}, ("error", "message")
        ),
        "Accepted": accepted,
        "AcceptedBatch": _object({"events": _array(accepted)}, ("events",)),
        "CloudEvent": _object(
            {
                "specversion": _STRING,
                "id": _STRING,
                "source": _STRING,
                "type": _STRING,
                "data": _ANY,
                "data_base64": _STRING,
            },
            ("id", "source", "type"),
        ),
        "CloudEventBatch": _array(_ref("CloudEvent")),
        "Pong": _object({"status": _STRING, "hook_id": _ANY}, ("status",)),
        "Challenge": _object({"challenge": _STRING}, ("challenge",)),
        **_event_schemas(),
        "Acknowledged": _object(
            {"event_id": _STRING, "status": _STRING, "previous_status": _STRING},
            ("event_id", "status", "previous_status"),
        ),
        "Redelivered": redelivered,
        "RetriedDeadLetter": _object(
            {"dead_letter_id": _STRING, **redelivered["properties"]},
            ("dead_letter_id", "event_id", "handler", "task_id"),
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
                "attempts": _INTEGER,
                "first_failure_at": _STRING,
                "last_failure_at": _STRING,
                "task_id": _STRING,
                "annotation": {
                    "type": ["object", "null"],
                    "additionalProperties": True,
                    "description": "What triage (or an operator) noted on it; null if nothing.",
                },
            },
            ("id", "event_id", "handler"),
        ),
        "Discarded": _object(
            {"discarded": _ref("DeadLetter"), "reason": _STRING}, ("discarded", "reason")
        ),
        "RetriedBatch": _object(
            {
                "retried": _array(_ref("RetriedDeadLetter")),
                "left": {"type": "integer", "description": "Matching dead letters left."},
            },
            ("retried", "left"),
        ),
        "ReplayReport": _object(
            {
                "dry_run": _BOOLEAN,
                "events": _INTEGER,
                "deliveries": _INTEGER,
                "interrupted": _BOOLEAN,
                "matched": _INTEGER,
                "left": _INTEGER,
                "next_since": _nullable("string"),
                "items": _array(
                    _object(
                        {
                            "event_id": _STRING,
                            "type": _STRING,
                            "handler": _STRING,
                            "task_id": _STRING,
                        },
                        ("event_id", "handler"),
                    )
                ),
            },
            ("dry_run", "events", "deliveries", "matched", "left", "items"),
        ),
        "Subscription": _object(
            {"pattern": _STRING, "handler": _STRING, "created_at": _STRING}, ("pattern", "handler")
        ),
        "Subscriptions": _object(
            {"subscriptions": _array(_ref("Subscription"))}, ("subscriptions",)
        ),
        "Removed": _object(
            {"removed": _object({"pattern": _STRING, "handler": _STRING}, ("pattern", "handler"))},
            ("removed",),
        ),
        "Relay": relay,
        "Stats": _object(
            {
                "events": {**_map(_map(_INTEGER)), "description": "Counts by type and status."},
                "statuses": _map(_INTEGER),
                "stored": _INTEGER,
                "pending": _INTEGER,
                "dead_letters": _INTEGER,
                "lanes": {**_map(_INTEGER), "description": "Messages waiting in each lane."},
                "relay": _ref("Relay"),
                "workers": _array(_STRING),
                "stuck": {**_map(_INTEGER), "description": "Stuck deliveries by status."},
                "flow": _object(
                    {
                        "concurrency": {
                            **_map(_ANY_OBJECT),
                            "description": "Slots in use (running), their limit and deliveries "
                            "parked (waiting), per concurrency scope with any of them.",
                        },
                        "waiting": {
                            **_map(_map(_INTEGER)),
                            "description": "Deliveries waiting, per handler and what for "
                            "(concurrency, rate limit, debounce, budget, model pause).",
                        },
                        "budgets": _ANY_OBJECT,
                    },
                    ("concurrency", "waiting", "budgets"),
                ),
                "unrouted_types": {
                    **_array(_STRING),
                    "description": "Mapped webhook types that no route or subscription handles.",
                },
                "unconsumed_types": {
                    **_array(_STRING),
                    "description": "Types the agents may publish that no route consumes.",
                },
            },
            (
                *("events", "statuses", "stored", "pending", "dead_letters", "lanes"),
                *("relay", "workers", "stuck", "flow", "unrouted_types", "unconsumed_types"),
            ),
        ),
        "Health": _object({"status": _STRING}, ("status",)),
        "Readiness": _object(
            {
                "status": {"type": "string", "enum": ["ready", "unavailable"]},
                "checks": _map(_STRING),
                "relay": {"oneOf": [_ref("Relay"), _STRING]},
            },
            ("status", "checks", "relay"),
        ),
    }


def _event_paths() -> dict[str, Any]:
    event_id = _path("event_id")
    not_found = {"404": _json(_ref("Error"), "No such event.")}
    return {
        "/api/events": {
            "get": _operation(
                "listEvents",
                "List stored events: summaries, a page at a time",
                {"200": _json(_ref("EventPage"), "Summaries, newest first by default.")},
                parameters=[
                    _query("type", "Only events of this type."),
                    _query("since", _TIME),
                    _query("until", _TIME),
                    _query("limit", "At most this many (1 to 1000, default 100).", _INTEGER),
                    _query(
                        "order",
                        "newest (default) or oldest first.",
                        {"type": "string", "enum": ["newest", "oldest"], "default": "newest"},
                    ),
                    _query("cursor", "The `next_cursor` of the page before."),
                ],
            ),
            "post": _operation(
                "publishEvent",
                "Publish an event",
                {
                    "202": _json(_ref("Accepted"), "Stored durably; dispatch follows."),
                    "200": _json(_ref("Accepted"), "Its dedupe key was used: the original id."),
                },
                body=_ref("NewEvent"),
            ),
        },
        "/api/events/{event_id}": {
            "get": _operation(
                "getEvent",
                "One event: its deliveries (runs, attempts, totals), its agents' transcripts",
                {"200": _json(_ref("Event"), "The event's full record."), **not_found},
                parameters=[
                    event_id,
                    _query(
                        "transcript",
                        "compact (default) or full: prompt, messages, results.",
                        {"type": "string", "enum": ["compact", "full"]},
                    ),
                ],
            )
        },
        "/api/events/{event_id}/acknowledge": {
            "post": _operation(
                "acknowledgeEvent",
                "Set an event's status by hand",
                {
                    "200": _json(_ref("Acknowledged"), "The new and the previous status."),
                    **not_found,
                },
                parameters=[event_id],
                body=_object(
                    {
                        "status": {"type": "string", "enum": list(ACK_STATUSES)},
                        "reason": _STRING,
                    }
                ),
            )
        },
        "/api/events/{event_id}/retry": {
            "post": _operation(
                "retryEvent",
                "Retry every dead delivery of an event",
                {
                    "200": _json(
                        _object({"retried": _array(_ref("Redelivered"))}, ("retried",)),
                        "The deliveries enqueued again.",
                    ),
                    **not_found,
                },
                parameters=[event_id],
                errors=(*_ADMIN, *_ENQUEUES),
            )
        },
    }


def _dead_letter_paths() -> dict[str, Any]:
    letter_id = _path("letter_id")
    not_found = {"404": _json(_ref("Error"), "No such dead letter.")}
    return {
        "/api/dead-letters": {
            "get": _operation(
                "listDeadLetters",
                "List dead letters, newest first",
                {
                    "200": _json(
                        _object(
                            {"dead_letters": _array(_ref("DeadLetter")), "more": _INTEGER},
                            ("dead_letters", "more"),
                        ),
                        "Dead letters, and how many more match beyond the limit.",
                    )
                },
                parameters=[
                    _query("type", "Only dead letters of this event type."),
                    _query("handler", "Only dead letters of this handler."),
                    _query("limit", "At most this many (default 50).", _INTEGER),
                ],
            )
        },
        "/api/dead-letters/{letter_id}": {
            "get": _operation(
                "getDeadLetter",
                "One dead letter",
                {"200": _json(_ref("DeadLetter"), "The dead letter."), **not_found},
                parameters=[letter_id],
            )
        },
        "/api/dead-letters/{letter_id}/retry": {
            "post": _operation(
                "retryDeadLetter",
                "Retry one dead letter with a fresh retry budget",
                {
                    "200": _json(_ref("RetriedDeadLetter"), "The delivery enqueued again."),
                    **not_found,
                },
                parameters=[letter_id],
                errors=(*_ADMIN, *_ENQUEUES),
            )
        },
        "/api/dead-letters/{letter_id}/discard": {
            "post": _operation(
                "discardDeadLetter",
                "Discard a dead letter for good",
                {"200": _json(_ref("Discarded"), "The dead letter discarded."), **not_found},
                parameters=[letter_id],
                body=_object({"reason": _STRING}, ("reason",)),
            )
        },
        "/api/dead-letters/retry-batch": {
            "post": _operation(
                "retryDeadLetters",
                "Retry a filtered batch of dead letters",
                {
                    "200": _json(
                        _ref("RetriedBatch"),
                        "The deliveries enqueued again, and the matching dead letters left.",
                    )
                },
                body=_object(
                    {
                        "type": _STRING,
                        "handler": _STRING,
                        "limit": _INTEGER,
                        "until_empty": _BOOLEAN,
                    }
                ),
                errors=(*_ADMIN, *_ENQUEUES),
            )
        },
    }


def _operations_paths() -> dict[str, Any]:
    replay_body = _object(
        {
            "type": _STRING,
            "since": {"type": "string", "description": _TIME},
            "until": {"type": "string", "description": _TIME},
            "limit": _INTEGER,
            "handler": _STRING,
            "dry_run": _BOOLEAN,
        }
    )
    return {
        "/api/replay": {
            "post": _operation(
                "replayEvents",
                "Replay stored events (dry_run says what would be replayed)",
                {"200": _json(_ref("ReplayReport"), "The replay report.")},
                body=replay_body,
                errors=(*_ADMIN, *_ENQUEUES),
            )
        },
        "/api/subscriptions": {
            "get": _operation(
                "listSubscriptions",
                "List run-time subscriptions",
                {"200": _json(_ref("Subscriptions"), "Subscriptions.")},
            ),
            "post": _operation(
                "subscribe",
                "Subscribe a handler to event types",
                {"201": _json(_ref("Subscriptions"), "Created.")},
                body=_object(
                    {
                        "event_types": {"type": ["array", "string"], "items": _STRING},
                        "handler": _STRING,
                    },
                    ("event_types", "handler"),
                ),
            ),
            "delete": _operation(
                "unsubscribe",
                "Remove a subscription",
                {
                    "200": _json(_ref("Removed"), "Removed."),
                    "404": _json(_ref("Error"), "No such subscription."),
                },
                parameters=[_query("pattern", "The pattern."), _query("handler", "The handler.")],
            ),
        },
        "/api/stats": {
            "get": _operation(
                "getStats",
                "Counts by type and status, lanes, dead letters, relay, workers, stuck, flow",
                {"200": _json(_ref("Stats"), "Statistics.")},
            )
        },
        "/metrics": {
            "get": _operation(
                "getMetrics",
                "Prometheus metrics of the web and the store (text exposition format)",
                {
                    "200": {
                        "description": "Every counter, histogram and gauge (see the README).",
                        "content": {"text/plain": {"schema": _STRING}},
                    }
                },
                tag="meta",
                errors=("401", "403"),
            )
        },
        "/api/openapi.json": {
            "get": _operation(
                "getOpenapi",
                "This document",
                {"200": _json(_ANY_OBJECT, "OpenAPI 3.1.")},
                tag="meta",
                errors=(),
            )
        },
    }


#: Webhook endpoints: (operation id, summary, how it is signed, extra media types, 200 replies).
_SENDERS: dict[str, tuple[str, str, str, tuple[str, ...], tuple[str, ...]]] = {
    "/webhooks/github": (
        "receiveGithub",
        "A GitHub webhook delivery (JSON or form content type)",
        "X-Hub-Signature-256 with GITHUB_WEBHOOK_SECRET; X-GitHub-Event and "
        "X-GitHub-Delivery are required. A form post (application/x-www-form-urlencoded) "
        "carries the JSON in its `payload` field. `ping` is answered (Pong), not stored.",
        ("application/x-www-form-urlencoded",),
        ("Pong",),
    ),
    "/webhooks/stripe": (
        "receiveStripe",
        "A Stripe event",
        "Stripe-Signature with STRIPE_WEBHOOK_SECRET.",
        (),
        (),
    ),
    "/webhooks/slack": (
        "receiveSlack",
        "A Slack Events API request",
        "X-Slack-Signature and X-Slack-Request-Timestamp with SLACK_SIGNING_SECRET. "
        "url_verification is answered with its challenge, not stored.",
        (),
        ("Challenge",),
    ),
    "/webhooks/{source}": (
        "receiveWebhook",
        "A Standard Webhooks delivery from any other source",
        "webhook-id, webhook-timestamp, webhook-signature (or Svix's svix-*) with "
        "EDA_WEBHOOK_SECRET_<SOURCE>.",
        (),
        (),
    ),
}


def _ingest_paths() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for path, (operation_id, summary, signing, media, replies) in _SENDERS.items():
        duplicate: dict[str, Any] = _ref("Accepted")
        if replies:
            duplicate = {"oneOf": [_ref("Accepted"), *(_ref(name) for name in replies)]}
        operation = _operation(
            operation_id,
            summary,
            {
                "202": _json(_ref("Accepted"), "Stored durably; dispatch follows."),
                "200": _json(duplicate, "A duplicate (the original id), or a reply."),
            },
            tag="webhooks",
            errors=_WEBHOOK,
        )
        operation["description"] = signing
        # What a provider sends is an object; any other source may send any JSON value.
        content: dict[str, Any] = {
            "application/json": {"schema": _ANY if "{source}" in path else _ANY_OBJECT}
        }
        for media_type in media:
            content[media_type] = {
                "schema": _object(
                    {"payload": {"type": "string", "description": "The JSON delivery."}},
                    ("payload",),
                )
            }
        # A body with several content types is not "required": openapi-python-client
        # 0.29 generates a client that cannot be imported for one that is. Without a
        # body the answer is 400.
        operation["requestBody"] = {"required": len(content) == 1, "content": content}
        if "{source}" in path:
            operation["parameters"] = [_path("source")]
        if path == "/webhooks/github":
            operation["parameters"] = [
                {"name": name, "in": "header", "required": True, "schema": _STRING}
                for name in ("X-GitHub-Event", "X-GitHub-Delivery")
            ]
        paths[path] = {"post": operation}
    paths["/events"] = _cloudevents_path()
    for path, operation_id, summary, schema in (
        ("/healthz", "healthz", "The process is up", "Health"),
        ("/readyz", "readyz", "Redis and the broker answer", "Readiness"),
    ):
        answers = {"200": _json(_ref(schema), "Up.")}
        if schema == "Readiness":
            answers["503"] = _json(_ref(schema), "Redis or the broker does not answer.")
        paths[path] = {"get": _operation(operation_id, summary, answers, tag="meta", errors=())}
    return paths


def _cloudevents_path() -> dict[str, Any]:
    receive = _operation(
        "receiveCloudEvents",
        "CloudEvents 1.0 in binary, structured or batched mode",
        {
            "202": _json(
                {"oneOf": [_ref("Accepted"), _ref("AcceptedBatch")]},
                "Stored durably (a batch: each event's id).",
            ),
            "200": _json(
                {"oneOf": [_ref("Accepted"), _ref("AcceptedBatch")]},
                "Every event was a duplicate: the original ids.",
            ),
        },
        tag="webhooks",
        errors=_WEBHOOK,
    )
    receive["description"] = (
        "Structured mode: one CloudEvent as application/cloudevents+json. Batched: a JSON "
        "array of them (CloudEventBatch) as application/cloudevents-batch+json, at most "
        "1000, answered with each event's id (AcceptedBatch). Binary mode: the "
        "attributes in ce-* headers and the data as the body, with its own content type "
        "(JSON; text, XML and YAML kept as text; anything else kept as base64). "
        "Authenticated by a Standard Webhooks signature (webhook-* or svix-* headers, "
        "EDA_WEBHOOK_SECRET_EVENTS), or by a named sender's token as "
        "`Authorization: Bearer <token>` or `X-Api-Key: <token>` (EDA_EVENTS_TOKEN_<SENDER>); "
        "with neither, 401."
    )
    receive["security"] = [{"eventsBearer": []}, {"eventsApiKey": []}, {"standardWebhooks": []}]
    receive["requestBody"] = {
        "required": False,  # as for GitHub's two content types: without a body, 400
        "content": {
            "application/cloudevents+json": {"schema": _ref("CloudEvent")},
            # application/cloudevents-batch+json (CloudEventBatch) is in the description:
            # openapi-python-client cannot send a request body offered as an array beside
            # other content types, and a generated client must call every operation.
            "application/json": {"schema": _ANY_OBJECT},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
    handshake = _operation(
        "cloudEventsHandshake",
        "The CloudEvents webhook abuse-protection handshake",
        {
            "200": {
                "description": "The origin may send: WebHook-Allowed-Origin (and "
                "WebHook-Allowed-Rate when a rate was asked).",
                "headers": {
                    "WebHook-Allowed-Origin": {"schema": _STRING},
                    "WebHook-Allowed-Rate": {"schema": _STRING},
                },
            },
            "403": _json(_ref("Error"), "The origin is not in EDA_CLOUDEVENTS_ALLOWED_ORIGINS."),
        },
        parameters=[
            {"name": "WebHook-Request-Origin", "in": "header", "required": True, "schema": _STRING},
            {"name": "WebHook-Request-Rate", "in": "header", "schema": _STRING},
        ],
        tag="webhooks",
        errors=("400",),
    )
    return {"post": receive, "options": handshake}


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
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "eventsBearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A CloudEvents sender's EDA_EVENTS_TOKEN_<SENDER>.",
                },
                "eventsApiKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Api-Key",
                    "description": "A CloudEvents sender's EDA_EVENTS_TOKEN_<SENDER>.",
                },
                "standardWebhooks": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "webhook-signature",
                    "description": "Standard Webhooks: webhook-id, webhook-timestamp and "
                    "webhook-signature (v1,<base64 HMAC-SHA256>) with the source's secret.",
                },
            },
        },
        "security": [{"bearer": []}],
    }
