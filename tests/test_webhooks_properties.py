"""Arbitrary requests at every endpoint: never a 5xx, never an event stored without a signature."""

from __future__ import annotations

import http.client
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eda.core import Core
from eda.settings import Settings
from tests.http_support import (
    STANDARD_SECRET,
    app_client,
    github_signature,
    serve,
    standard_headers,
)
from webhooks import create_app

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


# -- timestamps, surrogates and chunked bodies: each once answered 500 or was cut ---------------

#: Characters ``str.isdigit()`` takes and a header can carry (latin-1): ASCII digits and ¹²³.
LATIN_DIGITS = "0123456789\u00b9\u00b2\u00b3"
#: Timestamps written with at least one digit that is not ASCII.
UNICODE_STAMPS = st.text(st.sampled_from(LATIN_DIGITS), min_size=1, max_size=12).filter(
    lambda text: not text.isascii()
)


def _stamp_headers(path: str, stamp: str) -> dict[str, str]:
    """Signature headers of ``path`` whose timestamp is ``stamp``."""
    if path == "/webhooks/stripe":
        return {"Stripe-Signature": f"t={stamp},v1={'0' * 64}"}
    if path == "/webhooks/slack":
        return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": "v0=" + "0" * 64}
    return {"webhook-id": "m", "webhook-timestamp": stamp, "webhook-signature": "v1,AAAA"}


@EXAMPLES
@given(
    path=st.sampled_from(["/webhooks/stripe", "/webhooks/slack", "/webhooks/acme", "/events"]),
    stamp=UNICODE_STAMPS,
)
def test_a_timestamp_of_unicode_digits_is_a_401_not_a_server_error(
    app: FlaskClient, core: Core, caplog: pytest.LogCaptureFixture, path: str, stamp: str
) -> None:
    caplog.clear()
    headers = {**_stamp_headers(path, stamp), "Content-Type": "application/json"}
    response = app.post(path, data=b'{"type": "a.b", "id": "x"}', headers=headers)
    assert response.status_code == 401, response.get_data(as_text=True)
    assert "not a Unix timestamp" in response.get_json()["message"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert core.history() == []


SURROGATES = st.integers(min_value=0xD800, max_value=0xDFFF).map(chr)
#: Where a lone surrogate sits in an otherwise good delivery.
PLACES = st.sampled_from(["value", "key", "nested", "source", "subject"])


def _with_surrogate(place: str, surrogate: str, path: str) -> bytes:
    """A body every endpoint would store, but for the one lone surrogate (JSON-escaped)."""
    outer: dict[str, Any] = {"type": "a.b", "action": "opened", "id": "e1"}
    data = outer
    if path == "/events":
        data = {}
        outer = {"specversion": "1.0", "id": "c1", "source": "s", "type": "a.b", "data": data}
    if place == "value":
        data["s"] = surrogate
    elif place == "key":
        data[surrogate] = 1
    elif place == "nested":
        data["n"] = [{"deep": ["x" + surrogate]}]
    elif place == "source":
        outer["source"] = surrogate
    else:
        outer["subject"] = "a" + surrogate
    return json.dumps(outer).encode()  # ensure_ascii: the surrogate travels as \udXXX


@EXAMPLES
@given(
    path=st.sampled_from(["/webhooks/github", "/webhooks/acme", "/events"]),
    place=PLACES,
    surrogate=SURROGATES,
)
def test_a_signed_body_holding_a_lone_surrogate_is_a_400(
    app: FlaskClient,
    core: Core,
    caplog: pytest.LogCaptureFixture,
    path: str,
    place: str,
    surrogate: str,
) -> None:
    caplog.clear()
    body = _with_surrogate(place, surrogate, path)
    content_type = "application/cloudevents+json" if path == "/events" else "application/json"
    extra = {"X-GitHub-Event": "issues", "X-GitHub-Delivery": "d-1"}
    response = app.post(path, data=body, headers=signed(path, body, content_type, extra))
    assert response.status_code == 400, response.get_data(as_text=True)
    assert "surrogate" in response.get_json()["message"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert core.history() == []


#: The body limit of the chunked-body tests.
LIMIT = 4096


def _post_chunked(url: str, path: str, body: bytes, headers: dict[str, str]) -> int:
    """POST ``body`` with ``Transfer-Encoding: chunked`` (no Content-Length); the status."""
    connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=30)
    try:
        chunks = (body[i : i + 1000] for i in range(0, len(body), 1000))
        connection.request("POST", path, body=chunks, headers=headers, encode_chunked=True)
        return connection.getresponse().status
    finally:
        connection.close()


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(size=st.integers(min_value=LIMIT - 3, max_value=LIMIT + 3) | st.just(LIMIT * 4))
def test_a_chunked_body_over_the_limit_is_a_413_even_when_its_first_bytes_are_signed(
    make_settings: Callable[..., Settings],
    client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    size: int,
) -> None:
    secrets = {"github": SECRETS["GITHUB_WEBHOOK_SECRET"]}
    core = Core(make_settings(webhook_max_body_bytes=LIMIT, webhook_secrets=secrets), client)
    document = b'{"action": "opened", "pad": "'
    signed_part = document + b"x" * (min(size, LIMIT) - len(document) - 2) + b'"}'
    body = signed_part + b" " * (size - len(signed_part))  # JSON still, past the signed part
    headers = {
        "X-Hub-Signature-256": github_signature(SECRETS["GITHUB_WEBHOOK_SECRET"], signed_part),
        "X-GitHub-Event": "issues",
        "X-GitHub-Delivery": f"d-{size}",
        "Content-Type": "application/json",
    }
    before = len(core.history())  # the examples share the test's prefix
    with serve(create_app(core)) as url:
        status = _post_chunked(url, "/webhooks/github", body, headers)
    if size > LIMIT:
        assert status == 413
        assert len(core.history()) == before
    else:
        assert status == 202
