"""POST /webhooks/slack: v0 signatures made by slack_sdk, url_verification, deduped retries."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from flask.testing import FlaskClient
from slack_sdk.signature import SignatureVerifier

from eda.core import Core
from tests.http_support import app_client, one_byte_altered, stored

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


@pytest.fixture
def slack(core: Core) -> FlaskClient:
    return app_client(core, SLACK_SIGNING_SECRET=SECRET)


def callback(event: dict[str, Any], event_id: str = "Ev01") -> bytes:
    return json.dumps(
        {
            "token": "legacy-verification-token",
            "team_id": "T1",
            "api_app_id": "A1",
            "type": "event_callback",
            "event_id": event_id,
            "event_time": int(time.time()),
            "event": event,
        }
    ).encode()


def headers(body: bytes, secret: str = SECRET, timestamp: int | None = None) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(secret).generate_signature(timestamp=stamp, body=body)
    assert signature is not None
    return {
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": signature,
        "Content-Type": "application/json",
    }


def test_slack_sdk_accepts_the_signature_it_generates() -> None:
    body = callback({"type": "app_mention", "text": "hi"})
    sent = headers(body)
    assert SignatureVerifier(SECRET).is_valid(
        body, sent["X-Slack-Request-Timestamp"], sent["X-Slack-Signature"]
    )


def test_url_verification_is_answered_with_its_challenge_and_not_stored(
    slack: FlaskClient, core: Core
) -> None:
    body = json.dumps(
        {"type": "url_verification", "token": "t", "challenge": "3eZbrw1aBm"}
    ).encode()
    response = slack.post("/webhooks/slack", data=body, headers=headers(body))
    assert response.status_code == 200
    assert response.json == {"challenge": "3eZbrw1aBm"}
    assert stored(core) == []


def test_url_verification_needs_a_signature_too(slack: FlaskClient) -> None:
    body = json.dumps({"type": "url_verification", "challenge": "x"}).encode()
    response = slack.post(
        "/webhooks/slack", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"type": "app_mention", "channel": "C1", "text": "<@U1> help"}, "chat.mentioned"),
        ({"type": "message", "subtype": "channel_join", "channel": "C1"}, "chat.message"),
        ({"type": "team_join", "user": {"id": "U2"}}, "slack.team_join"),
    ],
)
def test_an_event_callback_is_stored_by_its_inner_type(
    slack: FlaskClient, core: Core, event: dict[str, Any], expected: str
) -> None:
    body = callback(event, "Ev_map")
    response = slack.post("/webhooks/slack", data=body, headers=headers(body))
    assert response.status_code == 202
    stored_event = core.get_event(response.json["event_id"]).event
    assert (stored_event.type, stored_event.source) == (expected, "slack")
    assert stored_event.dedupe_key == "webhooks/slack:id:Ev_map"
    sent = json.loads(body)
    assert sent["token"]
    assert stored_event.payload == {k: v for k, v in sent.items() if k != "token"}


def test_a_retry_is_deduplicated(slack: FlaskClient, core: Core) -> None:
    body = callback({"type": "app_mention", "text": "hi"}, "Ev_retry")
    first = slack.post("/webhooks/slack", data=body, headers=headers(body))
    retry = slack.post(
        "/webhooks/slack",
        data=body,
        headers={**headers(body), "X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"},
    )
    assert (first.status_code, retry.status_code) == (202, 200)
    assert retry.json["event_id"] == first.json["event_id"]
    assert len(stored(core)) == 1


@pytest.mark.parametrize(
    "make_headers",
    [
        pytest.param(lambda body: headers(body, secret="not-the-secret"), id="wrong-secret"),
        pytest.param(
            lambda body: {"Content-Type": "application/json", "X-Slack-Request-Timestamp": "1"},
            id="missing-header",
        ),
        pytest.param(
            lambda body: headers(body, timestamp=int(time.time()) - 301), id="stale-timestamp"
        ),
    ],
)
def test_a_request_not_signed_with_the_secret_in_time_is_refused(
    slack: FlaskClient, core: Core, make_headers: Any
) -> None:
    body = callback({"type": "app_mention", "text": "hi"})
    response = slack.post("/webhooks/slack", data=body, headers=make_headers(body))
    assert response.status_code == 401
    assert stored(core) == []


def test_a_body_altered_by_one_byte_is_refused(slack: FlaskClient, core: Core) -> None:
    body = callback({"type": "app_mention", "text": "hi"})
    response = slack.post("/webhooks/slack", data=one_byte_altered(body), headers=headers(body))
    assert response.status_code == 401
    assert stored(core) == []
