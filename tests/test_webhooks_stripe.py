"""POST /webhooks/stripe: Stripe-Signature made by stripe-python, type mapping, event-id dedupe."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import stripe
from flask.testing import FlaskClient

from eda.core import Core
from tests.http_support import app_client, one_byte_altered, stored

SECRET = "whsec_test_stripe_secret_0123456789"


@pytest.fixture
def stripe_app(core: Core) -> FlaskClient:
    return app_client(core, STRIPE_WEBHOOK_SECRET=SECRET)


def stripe_event(event_type: str = "invoice.payment_failed", event_id: str = "evt_1") -> bytes:
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": event_type,
            "livemode": False,
            "data": {"object": {"id": "in_123", "object": "invoice", "amount_due": 4200}},
        }
    ).encode()


def post(client: FlaskClient, body: bytes, header: str | None) -> Any:
    headers = {"Content-Type": "application/json; charset=utf-8"}
    if header is not None:
        headers["Stripe-Signature"] = header
    return client.post("/webhooks/stripe", data=body, headers=headers)


def signed(body: bytes, secret: str = SECRET, timestamp: int | None = None) -> str:
    """The header as stripe-python generates it for tests."""
    return stripe.WebhookSignature.generate_signature_header(body.decode(), secret, timestamp)


def test_stripe_python_accepts_the_header_it_generates() -> None:
    body = stripe_event()
    event = stripe.Webhook.construct_event(body.decode(), signed(body), SECRET)
    assert event["id"] == "evt_1"


@pytest.mark.parametrize(
    ("stripe_type", "expected"),
    [
        ("invoice.payment_failed", "payment.failed"),
        ("checkout.session.completed", "payment.completed"),
        ("customer.subscription.updated", "stripe.customer.subscription.updated"),
    ],
)
def test_a_signed_event_is_stored_with_its_mapped_type(
    stripe_app: FlaskClient, core: Core, stripe_type: str, expected: str
) -> None:
    body = stripe_event(stripe_type, "evt_map")
    response = post(stripe_app, body, signed(body))
    assert response.status_code == 202
    event = core.get_event(response.json["event_id"]).event
    assert (event.type, event.source, event.subject) == (expected, "stripe", "in_123")
    assert event.payload == json.loads(body)
    assert event.dedupe_key == "webhooks/stripe:id:evt_map"


def test_the_same_event_id_twice_is_one_event(stripe_app: FlaskClient, core: Core) -> None:
    body = stripe_event(event_id="evt_twice")
    first = post(stripe_app, body, signed(body))
    # Stripe retries with a fresh timestamp and signature: the event id is what dedupes.
    again = post(stripe_app, body, signed(body, timestamp=int(time.time()) + 1))
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json["event_id"] == first.json["event_id"]
    assert len(stored(core)) == 1


def test_any_v1_signature_may_match(stripe_app: FlaskClient) -> None:
    body = stripe_event(event_id="evt_rolled")
    now = int(time.time())
    good = signed(body, timestamp=now).split(",")[1]
    old_secret = signed(body, secret="whsec_rolled_away", timestamp=now).split(",")[1]
    response = post(stripe_app, body, f"t={now},{old_secret},{good},v0=ignored")
    assert response.status_code == 202


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(lambda body: signed(body, secret="whsec_wrong"), id="wrong-secret"),
        pytest.param(lambda body: None, id="missing-header"),
        pytest.param(
            lambda body: signed(body, timestamp=int(time.time()) - 301), id="stale-timestamp"
        ),
        pytest.param(
            lambda body: signed(body, timestamp=int(time.time()) + 301), id="future-timestamp"
        ),
        pytest.param(lambda body: "t=,v1=", id="malformed-header"),
    ],
)
def test_an_event_not_signed_with_the_secret_in_time_is_refused(
    stripe_app: FlaskClient, core: Core, header: Any
) -> None:
    body = stripe_event()
    response = post(stripe_app, body, header(body))
    assert response.status_code == 401
    assert response.json["error"] == "unauthorized"
    assert stored(core) == []


def test_a_body_altered_by_one_byte_is_refused(stripe_app: FlaskClient, core: Core) -> None:
    body = stripe_event()
    response = post(stripe_app, one_byte_altered(body), signed(body))
    assert response.status_code == 401
    assert stored(core) == []


def test_an_event_without_id_or_type_is_refused_as_unmappable(stripe_app: FlaskClient) -> None:
    body = json.dumps({"object": "event", "data": {}}).encode()
    response = post(stripe_app, body, signed(body))
    assert response.status_code == 400
    assert response.json["error"] == "invalid_input"
