"""POST /webhooks/github: X-Hub-Signature-256, event + action mapping, delivery dedupe, ping."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import pytest
from flask.testing import FlaskClient

from eda.core import Core
from tests.http_support import app_client, github_signature, one_byte_altered, stored
from webhooks import create_app, verify

SECRET = "github test secret"


@pytest.fixture
def github(core: Core) -> FlaskClient:
    return app_client(core, GITHUB_WEBHOOK_SECRET=SECRET)


def post(
    client: FlaskClient,
    event: str,
    payload: Any,
    *,
    delivery: str = "d-1",
    secret: str = SECRET,
    body: bytes | None = None,
) -> Any:
    raw = json.dumps(payload).encode() if body is None else body
    headers = {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": github_signature(secret, json.dumps(payload).encode()),
        "Content-Type": "application/json",
    }
    return client.post("/webhooks/github", data=raw, headers=headers)


def test_githubs_documented_test_vector_verifies() -> None:
    # https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
    signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    headers = {"x-hub-signature-256": signature}
    verify.github(b"Hello, World!", headers, "It's a Secret to Everybody", 300)
    assert github_signature("It's a Secret to Everybody", b"Hello, World!") == signature
    with pytest.raises(verify.SignatureRejected):
        verify.github(b"Hello, World?", headers, "It's a Secret to Everybody", 300)


def test_the_test_vector_passes_the_signature_check_of_the_endpoint(core: Core) -> None:
    response = app_client(core, GITHUB_WEBHOOK_SECRET="It's a Secret to Everybody").post(
        "/webhooks/github",
        data=b"Hello, World!",
        headers={
            "X-GitHub-Event": "push",
            "X-Hub-Signature-256": github_signature("It's a Secret to Everybody", b"Hello, World!"),
            "Content-Type": "application/json",
        },
    )
    # Signed correctly (no 401); refused only because the body is not JSON.
    assert response.status_code == 400
    assert response.json["field"] == "body"


@pytest.mark.parametrize(
    ("event", "payload", "expected"),
    [
        ("pull_request", {"action": "opened", "number": 7}, "code.pr_opened"),
        ("pull_request", {"action": "closed", "number": 7}, "code.pr_closed"),
        ("push", {"ref": "refs/heads/main"}, "code.pushed"),
        ("issues", {"action": "opened"}, "issue.opened"),
        ("star", {"action": "created"}, "github.star.created"),
        ("create", {"ref": "v1"}, "github.create"),
    ],
)
def test_a_signed_delivery_is_stored_with_its_mapped_type(
    github: FlaskClient, core: Core, event: str, payload: dict[str, Any], expected: str
) -> None:
    payload = {**payload, "repository": {"full_name": "octo/cat"}}
    response = post(github, event, payload, delivery="delivery-42")
    assert response.status_code == 202
    stored_event = core.get_event(response.json["event_id"]).event
    assert stored_event.type == expected
    assert stored_event.source == "github"
    assert stored_event.payload == payload
    assert stored_event.subject == "octo/cat"
    digest = hashlib.sha256(json.dumps(payload).encode()).hexdigest()
    assert stored_event.dedupe_key == f"webhooks/github:body:{digest}"


def test_the_same_delivery_twice_is_one_event_answered_with_the_original_id(
    github: FlaskClient, core: Core
) -> None:
    first = post(github, "push", {"ref": "a"}, delivery="same")
    again = post(github, "push", {"ref": "a"}, delivery="same")
    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json == {"event_id": first.json["event_id"], "duplicate": True}
    assert len(stored(core)) == 1


def test_ping_is_answered_and_not_stored(github: FlaskClient, core: Core) -> None:
    response = post(github, "ping", {"zen": "Keep it logically awesome.", "hook_id": 12})
    assert response.status_code == 200
    assert response.json == {"status": "pong", "hook_id": 12}
    assert stored(core) == []


def test_a_form_encoded_delivery_is_read_from_its_payload_field(
    github: FlaskClient, core: Core
) -> None:
    body = urlencode({"payload": json.dumps({"action": "opened"})}).encode()
    response = github.post(
        "/webhooks/github",
        data=body,
        headers={
            "X-GitHub-Event": "issues",
            "X-GitHub-Delivery": "d-form",
            "X-Hub-Signature-256": github_signature(SECRET, body),
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert response.status_code == 202
    assert core.get_event(response.json["event_id"]).event.type == "issue.opened"


def test_a_delivery_without_its_event_header_is_refused(github: FlaskClient) -> None:
    body = b'{"action": "opened"}'
    response = github.post(
        "/webhooks/github",
        data=body,
        headers={
            "X-Hub-Signature-256": github_signature(SECRET, body),
            "Content-Type": "application/json",
        },
    )
    assert response.status_code == 400
    assert response.json["field"] == "X-GitHub-Event"


def test_a_delivery_without_its_delivery_header_is_refused(github: FlaskClient, core: Core) -> None:
    body = b'{"action": "opened"}'
    response = github.post(
        "/webhooks/github",
        data=body,
        headers={
            "X-GitHub-Event": "issues",
            "X-Hub-Signature-256": github_signature(SECRET, body),
            "Content-Type": "application/json",
        },
    )
    assert response.status_code == 400
    assert response.json["field"] == "X-GitHub-Delivery"
    assert "missing" in response.json["message"]
    assert stored(core) == []


def test_a_captured_delivery_resent_with_new_unsigned_headers_is_a_duplicate(
    github: FlaskClient, core: Core
) -> None:
    # GitHub signs the body only: the event and delivery headers are anyone's to change.
    payload = {"action": "opened", "issue": {"number": 7}}
    first = post(github, "issues", payload, delivery="genuine")
    resent = [
        post(github, "pull_request", payload, delivery=f"forged-{n}").status_code for n in range(20)
    ]
    assert first.status_code == 202
    assert resent == [200] * 20
    assert [(e.event.id, e.event.type) for e in stored(core)] == [
        (first.json["event_id"], "issue.opened")
    ]


Failure = Callable[[FlaskClient], Any]


@pytest.mark.parametrize(
    "send",
    [
        pytest.param(lambda c: post(c, "push", {"ref": "a"}, secret="wrong"), id="wrong-secret"),
        pytest.param(
            lambda c: c.post(
                "/webhooks/github",
                data=b'{"ref": "a"}',
                headers={
                    "X-GitHub-Event": "push",
                    "X-GitHub-Delivery": "d-dev",
                    "Content-Type": "application/json",
                },
            ),
            id="missing-header",
        ),
        pytest.param(
            lambda c: post(
                c,
                "push",
                {"ref": "main"},
                body=one_byte_altered(json.dumps({"ref": "main"}).encode()),
            ),
            id="body-altered-by-one-byte",
        ),
    ],
)
def test_a_delivery_not_signed_with_the_secret_is_refused_and_not_stored(
    github: FlaskClient, core: Core, send: Failure
) -> None:
    response = send(github)
    assert response.status_code == 401
    assert response.json["error"] == "unauthorized"
    assert stored(core) == []


def test_an_old_delivery_sent_again_is_a_duplicate_since_github_signs_no_timestamp(
    github: FlaskClient, core: Core
) -> None:
    # GitHub's signature has no timestamp to go stale: a replayed delivery is
    # caught by its signed body instead (remembered for dedupe_ttl).
    first = post(github, "push", {"ref": "a"}, delivery="old-one")
    replayed = post(github, "push", {"ref": "a"}, delivery="old-one")
    assert (first.status_code, replayed.status_code) == (202, 200)
    assert len(stored(core)) == 1


def test_with_no_secret_configured_the_source_is_refused(core: Core) -> None:
    response = post(create_app(core).test_client(), "push", {"ref": "a"})
    assert response.status_code == 401
    assert "GITHUB_WEBHOOK_SECRET" in response.json["message"]
    assert stored(core) == []


def test_the_development_switch_accepts_unsigned_deliveries(
    make_settings: Callable[..., Any], client: Any
) -> None:
    settings = make_settings(allow_unsigned=True)
    core = Core(settings, client)
    response = (
        create_app(core)
        .test_client()
        .post(
            "/webhooks/github",
            data=b'{"ref": "a"}',
            headers={
                "X-GitHub-Event": "push",
                "X-GitHub-Delivery": "d-dev",
                "Content-Type": "application/json",
            },
        )
    )
    assert response.status_code == 202
    assert core.get_event(response.json["event_id"]).event.type == "code.pushed"
