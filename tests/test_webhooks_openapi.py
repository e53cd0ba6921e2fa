"""The OpenAPI document, through a client generated from it by openapi-python-client.

The client is generated into a temporary folder, imported, and made to call every
operation of a real served app: each success, and each error status that can be
provoked. Every answer is parsed by the generated models and checked against the
schema the document gives for its status, with no property left undocumented.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib
import io
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import httpx
import pytest
import stripe
from jsonschema import Draft202012Validator
from slack_sdk.signature import SignatureVerifier

from eda.core import Core
from eda.redis_server import free_port
from eda.settings import Settings
from tests.conftest import wait_for
from tests.http_support import STANDARD_SECRET, github_signature, serve, with_secrets
from tests.lifecycle import kill
from webhooks import create_app
from webhooks.openapi import document

PACKAGE = "eda_api_client"
ADMIN_TOKEN = "admin-token-for-tests-0123456789"
EVENTS_TOKEN = "events-token-for-tests-0123456789"
SECRETS = {
    "GITHUB_WEBHOOK_SECRET": "github-secret-for-tests",
    "STRIPE_WEBHOOK_SECRET": "whsec_stripe_secret_for_tests",
    "SLACK_SIGNING_SECRET": "slack-secret-for-tests",
    "EDA_WEBHOOK_SECRET_ACME": STANDARD_SECRET,
    "EDA_WEBHOOK_SECRET_EVENTS": STANDARD_SECRET,
    "EDA_WEBHOOK_SECRET_BROKEN": "whsec_not*base64",
    "EDA_EVENTS_TOKEN_MONITOR": EVENTS_TOKEN,
    "EDA_ADMIN_TOKEN": ADMIN_TOKEN,
}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The client openapi-python-client generates from the document, imported."""
    folder = tmp_path_factory.mktemp("generated")
    spec = folder / "openapi.json"
    spec.write_text(json.dumps(document()))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "openapi_python_client",
            "generate",
            "--path",
            str(spec),
            "--output-path",
            str(folder / PACKAGE),
            "--meta",
            "none",
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(folder))
        for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
            del sys.modules[name]


def strict(schema: Any, components: dict[str, Any]) -> Any:
    """The schema with references resolved and no undocumented property allowed."""
    if isinstance(schema, list):
        return [strict(item, components) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        return strict(components[schema["$ref"].rsplit("/", 1)[1]], components)
    resolved = {key: strict(value, components) for key, value in schema.items()}
    if "properties" in resolved and "additionalProperties" not in resolved:
        resolved["additionalProperties"] = False
    return resolved


class Caller:
    """Calls generated operations, checks each answer, and notes what was called."""

    def __init__(self, client_module: ModuleType) -> None:
        self.api = client_module
        self.spec = document()
        self.operations = {
            operation["operationId"]: operation
            for item in self.spec["paths"].values()
            for operation in item.values()
        }
        self.seen: set[tuple[str, str]] = set()

    def module(self, operation_id: str) -> ModuleType:
        tag = self.operations[operation_id]["tags"][0]
        snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in operation_id)
        return importlib.import_module(f"{PACKAGE}.api.{tag}.{snake}")

    def __call__(self, operation_id: str, status: int, client: Any, **arguments: Any) -> Any:
        response = self.module(operation_id).sync_detailed(client=client, **arguments)
        assert response.status_code == status, (operation_id, response.content[:300])
        documented = self.operations[operation_id]["responses"][str(status)]
        self.seen.add((operation_id, str(status)))
        if "application/json" not in documented.get("content", {}):
            return response.parsed if "content" not in documented else response.content
        assert response.parsed is not None, operation_id
        schema = documented["content"]["application/json"]["schema"]
        answer = json.loads(response.content)
        checked = strict(schema, self.spec["components"]["schemas"])
        errors = [e.message for e in Draft202012Validator(checked).iter_errors(answer)]
        assert not errors, (operation_id, status, errors[:3])
        return response.parsed


def signer(secrets: dict[str, str]) -> Callable[[httpx.Request], None]:
    """An httpx request hook that signs webhook requests over the body the client sends."""

    def sign(request: httpx.Request) -> None:
        body, path = request.content, request.url.path
        stamp = int(time.time())
        if path == "/webhooks/github":
            request.headers["X-Hub-Signature-256"] = github_signature(
                secrets["GITHUB_WEBHOOK_SECRET"], body
            )
        elif path == "/webhooks/stripe":
            request.headers["Stripe-Signature"] = stripe.WebhookSignature.generate_signature_header(
                body.decode(), secrets["STRIPE_WEBHOOK_SECRET"], stamp
            )
        elif path == "/webhooks/slack":
            verifier = SignatureVerifier(secrets["SLACK_SIGNING_SECRET"])
            request.headers["X-Slack-Request-Timestamp"] = str(stamp)
            signature = verifier.generate_signature(timestamp=str(stamp), body=body)
            request.headers["X-Slack-Signature"] = signature or ""
        elif path.startswith("/webhooks/"):
            message = f"msg_{hashlib.sha256(body).hexdigest()[:24]}"  # a resent body: a retry
            key = base64.b64decode(STANDARD_SECRET.removeprefix("whsec_"))
            digest = hmac.new(key, f"{message}.{stamp}.".encode() + body, hashlib.sha256)
            request.headers["webhook-id"] = message
            request.headers["webhook-timestamp"] = str(stamp)
            request.headers["webhook-signature"] = (
                "v1," + base64.b64encode(digest.digest()).decode()
            )

    return sign


def plain_text(request: httpx.Request) -> None:
    """An httpx request hook that sends the body as text/plain, whatever it is."""
    request.headers["Content-Type"] = "text/plain"


def app_settings(settings: Settings, **update: Any) -> Settings:
    return with_secrets(settings, **SECRETS).model_copy(
        update={"cloudevents_allowed_origins": ("sender.example",), **update}
    )


def dead_events(live: Core, redis_client: Any, event_type: str, count: int) -> list[str]:
    """Events whose delivery to tests.handlers:fixable is dead-lettered (broken until fixed)."""
    ids = [uuid.uuid4().hex for _ in range(count)]
    for event_id in ids:
        redis_client.set(f"test-broken:{event_id}", "1")
        live.publish(event_type, {"n": event_id}, "test", id=event_id)
    wait_for(lambda: len(live.dead_letter_list(event_type=event_type)) == count, timeout=60)
    return ids


def test_a_generated_client_calls_every_operation_and_parses_every_answer(
    generated: ModuleType, live: Core, core: Core, client: Any, unique_type: Any
) -> None:
    api, models, call = generated, importlib.import_module(f"{PACKAGE}.models"), Caller(generated)
    types = importlib.import_module(f"{PACKAGE}.types")
    event_type = unique_type("openapi")
    handler = "tests.handlers:fixable"
    live.subscribe([event_type], handler)
    letters = dead_events(live, client, event_type, 4)
    hooks = {"event_hooks": {"request": [signer(SECRETS)]}}
    with (
        serve(create_app(live, app_settings(live.settings))) as url,
        serve(create_app(core, app_settings(core.settings, webhook_max_body_bytes=4096))) as bare,
        serve(create_app(core, core.settings)) as off,
    ):
        admin = api.AuthenticatedClient(url, ADMIN_TOKEN, raise_on_unexpected_status=True)
        anyone = api.Client(url, raise_on_unexpected_status=True, httpx_args=hooks)

        # -- meta
        call("getOpenapi", 200, anyone)
        call("healthz", 200, anyone)
        call("readyz", 200, anyone)

        # -- events
        new = models.NewEvent(type_=event_type + "x", payload={"a": 1}, dedupe_key="k-1")
        published = call("publishEvent", 202, admin, body=new)
        assert call("publishEvent", 200, admin, body=new).event_id == published.event_id
        unknown = models.NewEvent(type_="a.b")
        unknown.additional_properties["colour"] = "red"
        call("publishEvent", 400, admin, body=unknown)
        page = call(
            "listEvents", 200, admin, type_=event_type, limit=2, order=models.ListEventsOrder.OLDEST
        )
        assert [item.id for item in page.events] == letters[:2]
        rest = call(
            "listEvents",
            200,
            admin,
            type_=event_type,
            cursor=page.next_cursor,
            order=models.ListEventsOrder.OLDEST,
        )
        assert [item.id for item in rest.events] == letters[2:]
        call("listEvents", 400, admin, limit=0)
        full = call("getEvent", 200, admin, event_id=letters[0])
        assert full.deliveries[0].status == models.DeliveryStatus.DEAD
        assert full.deliveries[0].runs[0].attempts[0].error.message == "still broken"
        call("getEvent", 200, admin, event_id=letters[0], transcript=models.GetEventTranscript.FULL)
        call("getEvent", 404, admin, event_id="no-such-event")
        status = models.AcknowledgeEventBodyStatus.IGNORED
        body = models.AcknowledgeEventBody(status=status, reason="seen")
        assert call("acknowledgeEvent", 200, admin, event_id=published.event_id, body=body)
        call("acknowledgeEvent", 404, admin, event_id="no-such-event", body=body)
        for event_id in letters:
            client.delete(f"test-broken:{event_id}")
        retried = call("retryEvent", 200, admin, event_id=letters[0])
        assert [item.handler for item in retried.retried] == [handler]
        call("retryEvent", 404, admin, event_id="no-such-event")
        call("retryEvent", 400, admin, event_id=published.event_id)  # nothing dead

        # -- dead letters
        listed = call("listDeadLetters", 200, admin, type_=event_type, limit=2)
        listed_ids = {letter.event_id for letter in listed.dead_letters}
        assert (len(listed_ids), listed.more) == (2, 1) and listed_ids < set(letters[1:])
        call("getDeadLetter", 200, admin, letter_id=f"{letters[1]}:{handler}")
        call("getDeadLetter", 404, admin, letter_id="no:such")
        call("retryDeadLetter", 200, admin, letter_id=f"{letters[1]}:{handler}")
        call("retryDeadLetter", 404, admin, letter_id="no:such")
        reason = models.DiscardDeadLetterBody(reason="tested")
        call("discardDeadLetter", 200, admin, letter_id=f"{letters[2]}:{handler}", body=reason)
        call("discardDeadLetter", 404, admin, letter_id="no:such", body=reason)
        call(
            "discardDeadLetter",
            400,
            admin,
            letter_id=f"{letters[3]}:{handler}",
            body=models.DiscardDeadLetterBody(reason=" "),
        )
        batch = call(
            "retryDeadLetters", 200, admin, body=models.RetryDeadLettersBody(type_=event_type)
        )
        assert ([r.event_id for r in batch.retried], batch.left) == ([letters[3]], 0)

        # -- replay, subscriptions, stats
        window = models.ReplayEventsBody(type_=event_type, dry_run=True)
        assert call("replayEvents", 200, admin, body=window).events == 4
        assert (
            call(
                "replayEvents",
                200,
                admin,
                body=models.ReplayEventsBody(type_=event_type, handler=handler),
            ).deliveries
            == 4
        )
        call("replayEvents", 400, admin, body=models.ReplayEventsBody(since="yesterday-ish"))
        wanted = models.SubscribeBody(event_types=[f"{event_type}.more"], handler=handler)
        call("subscribe", 201, admin, body=wanted)
        call("subscribe", 400, admin, body=models.SubscribeBody(event_types=["a.b"], handler="x"))
        call("listSubscriptions", 200, admin)
        call("unsubscribe", 200, admin, pattern=f"{event_type}.more", handler=handler)
        call("unsubscribe", 404, admin, pattern=f"{event_type}.more", handler=handler)
        wait_for(lambda: live.get_event(letters[3]).deliveries[handler]["status"] == "succeeded")

        # -- who may call
        call("listEvents", 401, api.AuthenticatedClient(url, "wrong-token-0123456789"))
        call("getStats", 403, api.AuthenticatedClient(off, ADMIN_TOKEN))
        call("getMetrics", 403, api.AuthenticatedClient(off, ADMIN_TOKEN))
        call("getMetrics", 401, api.AuthenticatedClient(url, "wrong-token-0123456789"))
        scrape = call("getMetrics", 200, api.AuthenticatedClient(url, ADMIN_TOKEN))
        assert b"eda_relay_queue" in scrape

        # -- webhooks
        push = models.ReceiveGithubJsonBody.from_dict({"ref": f"refs/heads/{event_type}"})
        delivery = {"x_git_hub_event": "push", "x_git_hub_delivery": "d-1"}
        call("receiveGithub", 202, anyone, body=push, **delivery)
        call("receiveGithub", 200, anyone, body=push, **delivery)  # the same body: a duplicate
        form = models.ReceiveGithubDataBody(payload=json.dumps({"ref": "refs/heads/form"}))
        call("receiveGithub", 202, anyone, body=form, **delivery)
        ping = call(
            "receiveGithub",
            200,
            anyone,
            x_git_hub_event="ping",
            x_git_hub_delivery="d",
            body=models.ReceiveGithubJsonBody.from_dict({"hook_id": 7}),
        )
        assert (ping.status, ping.hook_id) == ("pong", 7)
        call("receiveGithub", 401, api.Client(url), body=push, **delivery)  # unsigned
        stripe_event = {"id": f"evt_{uuid.uuid4().hex}", "type": "customer.created"}
        call("receiveStripe", 202, anyone, body=models.ReceiveStripeBody.from_dict(stripe_event))
        call("receiveStripe", 200, anyone, body=models.ReceiveStripeBody.from_dict(stripe_event))
        challenge = {"type": "url_verification", "challenge": "c-1"}
        answer = call(
            "receiveSlack", 200, anyone, body=models.ReceiveSlackBody.from_dict(challenge)
        )
        assert answer.challenge == "c-1"
        mention = {
            "type": "event_callback",
            "event_id": f"Ev{event_type}",
            "event": {"type": "app_mention", "channel": "C1"},
        }
        call("receiveSlack", 202, anyone, body=models.ReceiveSlackBody.from_dict(mention))
        call("receiveSlack", 200, anyone, body=models.ReceiveSlackBody.from_dict(mention))
        call("receiveWebhook", 202, anyone, source="acme", body={"type": "thing.done"})
        call("receiveWebhook", 200, anyone, source="acme", body={"type": "thing.done"})
        call("receiveWebhook", 400, anyone, source="Not-A-Source", body={})
        call("receiveWebhook", 500, anyone, source="broken", body={})  # its secret is unusable

        # -- CloudEvents: a sender's token, structured and binary mode
        sender = api.AuthenticatedClient(url, EVENTS_TOKEN, raise_on_unexpected_status=True)
        cloudevent = models.CloudEvent(
            id="ce-1", source="/probe", type_="probe.fired", specversion="1.0", data={"v": 1}
        )
        call("receiveCloudEvents", 202, sender, body=cloudevent)
        call("receiveCloudEvents", 200, sender, body=cloudevent)
        binary = sender.with_headers(
            {
                "ce-specversion": "1.0",
                "ce-id": "ce-2",
                "ce-source": "/probe",
                "ce-type": "probe.raw",
            }
        )
        data = models.ReceiveCloudEventsJsonBody.from_dict({"v": 2})
        call("receiveCloudEvents", 202, binary, body=data)
        raw = types.File(payload=io.BytesIO(b"\x00\x01binary"))
        call("receiveCloudEvents", 202, binary.with_headers({"ce-id": "ce-3"}), body=raw)
        call(
            "receiveCloudEvents",
            401,
            api.AuthenticatedClient(url, "not-the-token-0123456789"),
            body=cloudevent,
        )
        call("cloudEventsHandshake", 200, anyone, web_hook_request_origin="sender.example")
        call("cloudEventsHandshake", 403, anyone, web_hook_request_origin="other.example")
        call("cloudEventsHandshake", 400, anyone, web_hook_request_origin="")

        # -- a core without a broker, a small body limit, a content type not taken
        small = api.AuthenticatedClient(bare, ADMIN_TOKEN, raise_on_unexpected_status=True)
        # Stats of this test's own prefix: the shared one holds other tests' broken records.
        stats = call("getStats", 200, small)
        assert "customer.signup" in stats.unrouted_types and stats.relay.queue >= 0
        stuck = core.get_event(core.publish("order.failed", {}, "test").event_id).event
        kill(core.deliveries, stuck, "tests.handlers:fail")
        call("retryEvent", 500, small, event_id=stuck.id)
        call("retryDeadLetter", 500, small, letter_id=f"{stuck.id}:tests.handlers:fail")
        call("retryDeadLetters", 500, small, body=models.RetryDeadLettersBody())
        again = models.ReplayEventsBody(type_="order.failed", handler="tests.handlers:fail")
        call("replayEvents", 500, small, body=again)
        call("publishEvent", 413, small, body=models.NewEvent(type_="a.b", payload="x" * 5000))
        as_text = {"event_hooks": {"request": [plain_text]}}
        call(
            "publishEvent",
            415,
            api.AuthenticatedClient(bare, ADMIN_TOKEN, httpx_args=as_text),
            body=models.NewEvent(type_="a.b"),
        )
        signed = api.Client(bare, httpx_args=hooks)
        call("receiveWebhook", 413, signed, source="acme", body={"big": "x" * 5000})
        text_hooks = {"event_hooks": {"request": [plain_text, signer(SECRETS)]}}
        call("receiveWebhook", 415, api.Client(bare, httpx_args=text_hooks), source="acme", body={})

    # -- the store unreachable
    dead_settings = app_settings(core.settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with serve(create_app(Core(dead_settings), dead_settings)) as down:
        call("listEvents", 503, api.AuthenticatedClient(down, ADMIN_TOKEN))
        call("readyz", 503, api.Client(down))
        call("receiveWebhook", 503, api.Client(down, httpx_args=hooks), source="acme", body={})

    called = {operation for operation, _ in call.seen}
    assert called == set(call.operations)
    documented = {
        status for operation in call.operations.values() for status in operation["responses"]
    }
    assert documented == {status for _, status in call.seen}
    for operation_id, operation in call.operations.items():
        for status in operation["responses"]:
            if status.startswith("2"):
                assert (operation_id, status) in call.seen, (operation_id, status)
