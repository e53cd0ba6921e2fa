"""Arbitrary requests at every endpoint: never a 5xx, never an event stored without a signature."""

from __future__ import annotations

import json
import time

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eda.core import Core
from tests.http_support import STANDARD_SECRET, app_client, github_signature, standard_headers

SECRETS = {
    "GITHUB_WEBHOOK_SECRET": "property github secret",
    "STRIPE_WEBHOOK_SECRET": "whsec_property_stripe",
    "SLACK_SIGNING_SECRET": "property slack secret",
    "EDA_WEBHOOK_SECRET_EVENTS": STANDARD_SECRET,
    "EDA_WEBHOOK_SECRET_ACME": STANDARD_SECRET,
    "EDA_ADMIN_TOKEN": "property admin token",
}
EXAMPLES = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

PATHS = st.sampled_from(
    [
        "/webhooks/github",
        "/webhooks/stripe",
        "/webhooks/slack",
        "/webhooks/acme",
        "/webhooks/unconfigured",
        "/webhooks/Bad-Name",
        "/events",
        "/api/events",
        "/api/events/x",
        "/api/replay",
        "/api/dead-letters/retry-batch",
        "/api/subscriptions",
        "/api/stats",
        "/healthz",
        "/readyz",
    ]
) | st.from_regex(r"\A/webhooks/[a-z0-9_.%-]{1,40}\Z")

HEADER_NAMES = st.sampled_from(
    [
        "Content-Type",
        "X-Hub-Signature-256",
        "X-GitHub-Event",
        "X-GitHub-Delivery",
        "Stripe-Signature",
        "X-Slack-Signature",
        "X-Slack-Request-Timestamp",
        "X-Slack-Retry-Num",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "X-Event-Type",
        "ce-specversion",
        "ce-id",
        "ce-type",
        "ce-source",
        "ce-time",
        "ce-subject",
        "Authorization",
    ]
)
PLAUSIBLE = st.sampled_from(
    [
        "application/json",
        "application/cloudevents+json",
        "application/cloudevents-batch+json",
        "application/x-www-form-urlencoded",
        "text/plain; charset=bogus",
        "application/json; x=",
        "1.0",
        "push",
        "ping",
        str(int(time.time())),
        "t=1,v1=00",
        "sha256=00",
        "v0=00",
        "v1,AAAA",
        "Bearer property",
        "Bearer ",
        "alert.triggered",
        "%zz",
        "2026-01-01T00:00:00Z",
    ]
)
HEADER_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80)
HEADERS = st.dictionaries(HEADER_NAMES, PLAUSIBLE | HEADER_TEXT, max_size=8)

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
NAMED = st.fixed_dictionaries(
    {
        "type": st.text(max_size=30)
        | st.sampled_from(["ping", "url_verification", "event_callback"])
    },
    optional={
        "id": st.text(max_size=20),
        "event": JSON_VALUES,
        "action": st.text(max_size=10),
        "specversion": st.just("1.0"),
        "source": st.text(max_size=10),
        "challenge": st.text(max_size=10),
        "data_base64": st.text(max_size=10),
    },
)
DEEP = (st.integers(min_value=100, max_value=3000) | st.just(50_000)).map(
    lambda n: b"[" * n + b"]" * n
)
BODIES = (
    st.binary(max_size=600)
    | JSON_VALUES.map(lambda v: json.dumps(v).encode())
    | NAMED.map(lambda v: json.dumps(v).encode())
    | st.lists(NAMED, max_size=3).map(lambda v: json.dumps(v).encode())
    | DEEP
)


@pytest.fixture
def app(core: Core) -> FlaskClient:
    return app_client(core, **SECRETS)


@EXAMPLES
@given(
    path=PATHS,
    method=st.sampled_from(["POST", "POST", "GET", "DELETE"]),
    headers=HEADERS,
    body=BODIES,
)
def test_arbitrary_requests_never_fail_the_server_nor_store_anything(
    app: FlaskClient, core: Core, path: str, method: str, headers: dict[str, str], body: bytes
) -> None:
    response = app.open(path, method=method, headers=headers, data=body)
    assert response.status_code < 500, response.get_data(as_text=True)
    assert response.is_json
    assert core.history() == []
    assert core.subscriptions() == []


def signed(path: str, body: bytes, content_type: str, extra: dict[str, str]) -> dict[str, str]:
    """Headers that pass the signature check of ``path``, whatever the body."""
    if path == "/webhooks/github":
        headers = {"X-Hub-Signature-256": github_signature(SECRETS["GITHUB_WEBHOOK_SECRET"], body)}
    else:
        headers = standard_headers(body, message_id=extra.get("webhook-id") or "m")
    return {**extra, **headers, "Content-Type": content_type}


@EXAMPLES
@given(
    path=st.sampled_from(["/webhooks/github", "/webhooks/acme", "/events"]),
    content_type=PLAUSIBLE,
    extra=HEADERS,
    body=BODIES.filter(lambda b: _utf8(b)),
)
def test_signed_arbitrary_bodies_are_answered_without_a_server_error(
    app: FlaskClient, core: Core, path: str, content_type: str, extra: dict[str, str], body: bytes
) -> None:
    before = len(core.history(limit=10_000))
    extra = {
        k: v for k, v in extra.items() if not k.lower().startswith(("webhook-sig", "webhook-t"))
    }
    response = app.post(path, data=body, headers=signed(path, body, content_type, extra))
    assert response.status_code < 500, response.get_data(as_text=True)
    assert response.is_json
    created = len(core.history(limit=10_000)) - before
    if response.status_code == 202:
        assert created >= 1
    else:
        assert created == 0


def _utf8(body: bytes) -> bool:
    # The Standard Webhooks reference signer takes text; other bytes are covered above.
    try:
        body.decode()
    except UnicodeDecodeError:
        return False
    return True


@pytest.mark.parametrize("depth", [300, 900, 100_000])
def test_a_deeply_nested_signed_body_is_a_400(app: FlaskClient, core: Core, depth: int) -> None:
    # Deeper than the store can serialise, or than Python's JSON parser can read.
    body = b'{"type": "a.b", "x": ' + b"[" * depth + b"]" * depth + b"}"
    headers = signed("/webhooks/acme", body, "application/json", {})
    response = app.post("/webhooks/acme", data=body, headers=headers)
    assert response.status_code == 400
    assert core.history() == []
