"""POST /webhooks/<source>: Standard Webhooks signatures made by the reference library."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from eda.core import Core
from eda.settings import Settings
from tests.http_support import (
    STANDARD_SECRET,
    app_client,
    one_byte_altered,
    standard_headers,
    stored,
)
from webhooks import create_app


@pytest.fixture
def pagerduty(core: Core) -> FlaskClient:
    return app_client(core, EDA_WEBHOOK_SECRET_PAGERDUTY=STANDARD_SECRET)


def post(client: FlaskClient, body: bytes, headers: dict[str, str]) -> Any:
    return client.post("/webhooks/pagerduty", data=body, headers=headers)


@pytest.mark.parametrize(
    ("payload", "extra", "expected"),
    [
        ({"type": "incident.triggered", "data": {"id": "P1"}}, {}, "pagerduty.incident.triggered"),
        (
            {"data": {"id": "P1"}},
            {"X-Event-Type": "incident.resolved"},
            "pagerduty.incident.resolved",
        ),
        ({"data": {"id": "P1"}}, {}, "pagerduty.event"),
        ({"type": "Incident Acknowledged"}, {}, "pagerduty.incident_acknowledged"),
    ],
)
def test_a_signed_delivery_is_stored_with_the_type_it_names(
    pagerduty: FlaskClient, core: Core, payload: Any, extra: dict[str, str], expected: str
) -> None:
    body = json.dumps(payload).encode()
    response = post(pagerduty, body, {**standard_headers(body, message_id="msg_map"), **extra})
    assert response.status_code == 202
    event = core.get_event(response.json["event_id"]).event
    assert (event.type, event.source, event.payload) == (expected, "pagerduty", payload)
    assert event.dedupe_key == "webhooks/pagerduty:id:msg_map"


def test_the_same_webhook_id_twice_is_one_event(pagerduty: FlaskClient, core: Core) -> None:
    body = b'{"type": "incident.triggered"}'
    first = post(pagerduty, body, standard_headers(body, message_id="msg_dup"))
    later = datetime.now(UTC) + timedelta(seconds=2)
    again = post(pagerduty, body, standard_headers(body, message_id="msg_dup", when=later))
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json["event_id"] == first.json["event_id"]
    assert len(stored(core)) == 1


def without(headers: dict[str, str], name: str) -> dict[str, str]:
    return {key: value for key, value in headers.items() if key != name}


WRONG_SECRET = "whsec_" + "d3JvbmcgIGtleSBvZiB0aGlydHktdHdvIGJ5dGVzISE="


@pytest.mark.parametrize(
    "make_headers",
    [
        pytest.param(lambda b: standard_headers(b, secret=WRONG_SECRET), id="wrong-secret"),
        pytest.param(
            lambda b: without(standard_headers(b), "webhook-signature"), id="no-signature"
        ),
        pytest.param(lambda b: without(standard_headers(b), "webhook-id"), id="no-id"),
        pytest.param(
            lambda b: without(standard_headers(b), "webhook-timestamp"), id="no-timestamp"
        ),
        pytest.param(
            lambda b: standard_headers(b, when=datetime.now(UTC) - timedelta(seconds=301)),
            id="stale-timestamp",
        ),
        pytest.param(
            lambda b: {**standard_headers(b), "webhook-id": "msg_other"}, id="id-not-the-signed-one"
        ),
    ],
)
def test_a_delivery_not_signed_with_the_secret_in_time_is_refused(
    pagerduty: FlaskClient, core: Core, make_headers: Any
) -> None:
    body = b'{"type": "incident.triggered"}'
    response = post(pagerduty, body, make_headers(body))
    assert response.status_code == 401
    assert stored(core) == []


def test_a_body_altered_by_one_byte_is_refused(pagerduty: FlaskClient, core: Core) -> None:
    body = b'{"type": "incident.triggered", "data": "abc"}'
    response = post(pagerduty, one_byte_altered(body), standard_headers(body))
    assert response.status_code == 401
    assert stored(core) == []


def test_a_source_without_a_secret_is_refused_naming_its_variable(core: Core) -> None:
    body = b'{"type": "alert.created"}'
    response = (
        create_app(core)
        .test_client()
        .post("/webhooks/opsgenie", data=body, headers=standard_headers(body))
    )
    assert response.status_code == 401
    assert "EDA_WEBHOOK_SECRET_OPSGENIE" in response.json["message"]


def test_a_source_name_that_cannot_start_an_event_type_is_refused(pagerduty: FlaskClient) -> None:
    response = pagerduty.post(
        "/webhooks/Not-A-Name", data=b"{}", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json["field"] == "source"


def test_a_message_signed_for_the_cloudevents_endpoint_is_not_taken_as_a_source(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    # /events and /webhooks/events would share EDA_WEBHOOK_SECRET_EVENTS: one message, two faces.
    body = b'{"specversion": "1.0", "id": "c1", "source": "s", "type": "alert.triggered"}'
    app = app_client(core, EDA_WEBHOOK_SECRET_EVENTS=STANDARD_SECRET)
    response = app.post("/webhooks/events", data=body, headers=standard_headers(body))
    assert response.status_code == 400
    assert "/events" in response.json["message"]
    assert stored(core) == []


def test_a_secret_that_is_not_base64_is_a_server_error_that_reveals_nothing(
    core: Core, caplog: pytest.LogCaptureFixture
) -> None:
    body = b'{"type": "x.y"}'
    with caplog.at_level(logging.INFO):
        response = app_client(core, EDA_WEBHOOK_SECRET_BROKEN="whsec_not*base64!").post(
            "/webhooks/broken", data=body, headers=standard_headers(body)
        )
    assert response.status_code == 500
    assert response.json["error"] == "misconfigured"
    assert "not*base64" not in response.get_data(as_text=True) + caplog.text


def test_the_type_mapping_can_be_overridden_from_a_file(
    make_settings: Any, client: redis.Redis, tmp_path: Path
) -> None:
    override = tmp_path / "types.yaml"
    override.write_text(
        "pagerduty:\n  types:\n    incident.triggered: alert.triggered\n"
        "github:\n  types:\n    push: code.pushed_somewhere\n"
    )
    settings: Settings = make_settings(webhook_types_path=override)
    core = Core(settings, client)
    app = app_client(core, EDA_WEBHOOK_SECRET_PAGERDUTY=STANDARD_SECRET)
    triggered = b'{"type": "incident.triggered"}'
    resolved = b'{"type": "incident.resolved"}'
    first = post(app, triggered, standard_headers(triggered, message_id="m1"))
    second = post(app, resolved, standard_headers(resolved, message_id="m2"))
    types = [core.get_event(r.json["event_id"]).event.type for r in (first, second)]
    assert types == ["alert.triggered", "pagerduty.incident.resolved"]


def svix_headers(body: bytes, message_id: str, when: datetime | None = None) -> dict[str, str]:
    """The headers of a sender built on Svix (Clerk, Resend), signed by Svix's own library."""
    from svix.webhooks import Webhook as SvixWebhook

    moment = when or datetime.now(UTC)
    return {
        "svix-id": message_id,
        "svix-timestamp": str(int(moment.timestamp())),
        "svix-signature": SvixWebhook(STANDARD_SECRET).sign(message_id, moment, body.decode()),
        "Content-Type": "application/json",
    }


def test_a_delivery_signed_by_svix_with_svix_headers_is_stored(
    pagerduty: FlaskClient, core: Core
) -> None:
    body = b'{"type": "user.created", "data": {"id": "user_1"}}'
    response = post(pagerduty, body, svix_headers(body, "msg_svix"))
    assert response.status_code == 202
    event = core.get_event(response.json["event_id"]).event
    assert (event.type, event.dedupe_key) == (
        "pagerduty.user.created",
        "webhooks/pagerduty:id:msg_svix",
    )
    # Svix retries with the same svix-id: a duplicate.
    later = datetime.now(UTC) + timedelta(seconds=2)
    again = post(pagerduty, body, svix_headers(body, "msg_svix", when=later))
    assert (again.status_code, again.json["event_id"]) == (200, response.json["event_id"])


def test_svix_headers_altered_or_mixed_are_refused(pagerduty: FlaskClient, core: Core) -> None:
    body = b'{"type": "user.created"}'
    signed = svix_headers(body, "msg_svix")
    # An unsigned svix-id beside a genuine webhook-* signature is what would be checked.
    mixed = {**standard_headers(body, message_id="msg_1"), "svix-id": "msg_forged"}
    for headers in ({**signed, "svix-id": "msg_other"}, mixed):
        assert post(pagerduty, body, headers).status_code == 401
    assert stored(core) == []
