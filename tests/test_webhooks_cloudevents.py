"""POST /events: CloudEvents 1.0 built by the cloudevents SDK: binary, structured, batch."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
import stripe
from cloudevents.core.bindings.http import HTTPMessage, to_binary, to_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from flask.testing import FlaskClient

from eda.core import Core
from eda.errors import InvalidInput
from eda.settings import load
from tests.http_support import (
    STANDARD_SECRET,
    app_client,
    one_byte_altered,
    standard_headers,
    stored,
)
from webhooks import create_app

BATCH = "application/cloudevents-batch+json"


@pytest.fixture
def events_app(core: Core) -> FlaskClient:
    return app_client(core, EDA_WEBHOOK_SECRET_EVENTS=STANDARD_SECRET)


def cloudevent(
    event_id: str = "ce-1", event_type: str = "alert.triggered", **extra: Any
) -> CloudEvent:
    attributes = {
        "id": event_id,
        "type": event_type,
        "source": "/monitoring/prod",
        "subject": "db-1",
        "time": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        "datacontenttype": "application/json",
        "correlationid": "corr-7",
        **extra,
    }
    return CloudEvent(attributes=attributes, data={"severity": "high", "count": 3})


def send(client: FlaskClient, message: HTTPMessage, *, message_id: str = "msg-1") -> Any:
    signing = standard_headers(message.body, message_id=message_id)
    del signing["Content-Type"]
    return client.post("/events", data=message.body, headers={**message.headers, **signing})


def test_a_binary_mode_event_is_stored_with_its_attributes(
    events_app: FlaskClient, core: Core
) -> None:
    response = send(events_app, to_binary(cloudevent(), JSONFormat()))
    assert response.status_code == 202
    event = core.get_event(response.json["event_id"]).event
    assert event.id != "ce-1"  # our own id; the sender's is the dedupe key
    assert (event.type, event.source, event.subject) == (
        "alert.triggered",
        "/monitoring/prod",
        "db-1",
    )
    assert event.payload == {"severity": "high", "count": 3}
    assert event.time == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert event.correlation_id is None  # lineage is ours, never a sender's
    assert event.dedupe_key == "events:message:msg-1"  # signed; ce-id is not


def test_a_structured_mode_event_is_stored(events_app: FlaskClient, core: Core) -> None:
    message = to_structured(cloudevent("ce-2"), JSONFormat())
    assert message.headers["content-type"] == "application/cloudevents+json"
    response = send(events_app, message)
    assert response.status_code == 202
    event = core.get_event(response.json["event_id"]).event
    assert (event.type, event.payload["severity"]) == ("alert.triggered", "high")


def test_binary_mode_text_data_is_kept_as_a_string(events_app: FlaskClient, core: Core) -> None:
    event = CloudEvent(
        attributes={
            "id": "t-1",
            "type": "log.line",
            "source": "app",
            "datacontenttype": "text/plain",
        },
        data="disk almost full",
    )
    response = send(events_app, to_binary(event, JSONFormat()))
    assert response.status_code == 202
    assert core.get_event(response.json["event_id"]).event.payload == "disk almost full"


def test_the_same_cloudevent_twice_is_one_event(events_app: FlaskClient, core: Core) -> None:
    # Structured: source + id are signed with the body, whatever the message id.
    first = send(events_app, to_structured(cloudevent("same"), JSONFormat()), message_id="m1")
    again = send(events_app, to_structured(cloudevent("same"), JSONFormat()), message_id="m2")
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json == {"event_id": first.json["event_id"], "duplicate": True}
    # Binary: the signed webhook-id is what a sender's retry carries again.
    binary = send(events_app, to_binary(cloudevent("bin"), JSONFormat()), message_id="m3")
    retried = send(events_app, to_binary(cloudevent("bin"), JSONFormat()), message_id="m3")
    assert (binary.status_code, retried.status_code) == (202, 200)
    assert len(stored(core)) == 2


def test_a_binary_event_resent_with_changed_unsigned_headers_is_a_duplicate(
    events_app: FlaskClient, core: Core
) -> None:
    message = to_binary(cloudevent("orig"), JSONFormat())
    signing = standard_headers(message.body, message_id="msg-captured")
    del signing["Content-Type"]
    first = events_app.post("/events", data=message.body, headers={**message.headers, **signing})
    forged = {
        **message.headers,
        "ce-id": "forged",
        "ce-type": "payment.refund_requested",
        "ce-source": "stripe",
        "ce-causationid": "someone-elses-event",
        "ce-time": "2030-01-01T00:00:00Z",
    }
    again = events_app.post("/events", data=message.body, headers={**forged, **signing})
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json["event_id"] == first.json["event_id"]
    [kept] = stored(core)
    assert (kept.event.type, kept.event.source, kept.event.causation_id) == (
        "alert.triggered",
        "/monitoring/prod",
        None,
    )


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_lineage_is_never_taken_from_a_sender(
    events_app: FlaskClient, core: Core, mode: str
) -> None:
    event = cloudevent("lin", causationid="their-cause", correlationid="their-chain")
    make = to_binary if mode == "binary" else to_structured
    response = send(events_app, make(event, JSONFormat()))
    assert response.status_code == 202
    kept = core.get_event(response.json["event_id"]).event
    assert (kept.causation_id, kept.correlation_id) == (None, None)


def test_a_cloudevent_cannot_make_a_signed_provider_event_a_duplicate(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    stripe_secret = "whsec_namespace_test_0123456789"
    app = app_client(
        core,
        EDA_WEBHOOK_SECRET_EVENTS=STANDARD_SECRET,
        STRIPE_WEBHOOK_SECRET=stripe_secret,
        EDA_ADMIN_TOKEN="admin-token-for-namespace-test",
    )
    squatter = cloudevent("evt_X", source="stripe")
    assert send(app, to_structured(squatter, JSONFormat())).status_code == 202
    admin = {"type": "payment.failed", "payload": {}, "dedupe_key": "webhooks/stripe:id:evt_X"}
    auth = {"Authorization": "Bearer admin-token-for-namespace-test"}
    assert app.post("/api/events", headers=auth, json=admin).status_code == 202
    body = json.dumps({"id": "evt_X", "type": "invoice.payment_failed", "data": {}}).encode()
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), stripe_secret)
    genuine = app.post(
        "/webhooks/stripe",
        data=body,
        headers={"Stripe-Signature": header, "Content-Type": "application/json"},
    )
    assert genuine.status_code == 202
    assert core.get_event(genuine.json["event_id"]).event.source == "stripe"
    assert len(stored(core)) == 3


def test_a_batch_stores_every_event_and_answers_each_id(
    events_app: FlaskClient, core: Core
) -> None:
    items = [json.loads(to_structured(cloudevent(f"b-{n}"), JSONFormat()).body) for n in range(3)]
    message = HTTPMessage({"content-type": BATCH}, json.dumps(items).encode())
    response = send(events_app, message)
    assert response.status_code == 202
    ids = [item["event_id"] for item in response.json["events"]]
    assert [e.event.id for e in stored(core)] == ids
    again = send(events_app, message, message_id="msg-2")
    assert again.status_code == 200
    assert [item["duplicate"] for item in again.json["events"]] == [True, True, True]


def test_a_batch_with_one_bad_event_stores_nothing(events_app: FlaskClient, core: Core) -> None:
    good = json.loads(to_structured(cloudevent("g-1"), JSONFormat()).body)
    bad = {**good, "id": "g-2", "specversion": "0.3"}
    message = HTTPMessage({"content-type": BATCH}, json.dumps([good, bad]).encode())
    response = send(events_app, message)
    assert response.status_code == 400
    assert response.json["field"] == "[1].specversion"
    assert stored(core) == []


def test_a_type_outside_our_convention_is_normalised(events_app: FlaskClient, core: Core) -> None:
    message = to_binary(cloudevent("n-1", "com.Example.Object-Deleted.v2"), JSONFormat())
    response = send(events_app, message)
    assert response.status_code == 202
    assert core.get_event(response.json["event_id"]).event.type == "com.example.object_deleted.v2"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"content-type": "application/octet-stream", "ce-specversion": "1.0"}, 400),
        ({"content-type": "application/json"}, 415),
        ({"content-type": "application/json", "ce-specversion": "1.0", "ce-id": "x"}, 400),
    ],
)
def test_what_is_not_a_cloudevent_is_refused(
    events_app: FlaskClient, core: Core, headers: dict[str, str], status: int
) -> None:
    response = send(events_app, HTTPMessage(headers, b'{"a": 1}'))
    assert response.status_code == status
    assert "error" in response.json
    assert stored(core) == []


def test_binary_data_is_kept_as_base64_with_its_content_type(
    events_app: FlaskClient, core: Core
) -> None:
    event = CloudEvent(
        attributes={
            "id": "bin",
            "type": "file.uploaded",
            "source": "s",
            "datacontenttype": "application/octet-stream",
        },
        data=b"\x00\x01\x02",
    )
    for mode, message_id in ((to_structured, "m-s"), (to_binary, "m-b")):
        response = send(events_app, mode(event, JSONFormat()), message_id=message_id)
        assert response.status_code == 202, response.json
        stored_event = core.get_event(response.json["event_id"]).event
        back = stored_event.to_cloudevent()
        assert base64.b64decode(back["data_base64"]) == b"\x00\x01\x02"
        assert back["datacontenttype"] == "application/octet-stream"


def test_xml_data_is_kept_as_text(events_app: FlaskClient, core: Core) -> None:
    xml = "<order id='7'>ü</order>"
    event = CloudEvent(
        attributes={
            "id": "x-1",
            "type": "order.placed",
            "source": "erp",
            "datacontenttype": "application/xml",
        },
        data=xml.encode(),
    )
    response = send(events_app, to_binary(event, JSONFormat()))
    assert response.status_code == 202, response.json
    stored_event = core.get_event(response.json["event_id"]).event
    assert stored_event.payload == xml
    assert stored_event.to_cloudevent()["datacontenttype"] == "application/xml"


@pytest.mark.parametrize("mode", [to_structured, to_binary])
def test_every_attribute_and_extension_comes_back_from_to_cloudevent(
    events_app: FlaskClient, core: Core, mode: Any
) -> None:
    sent = cloudevent(
        "ce-all",
        dataschema="https://example.com/alert.json",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        tracestate="rojo=00f067aa0ba902b7",
        region="eu-west",
        partitionkey="db-1",
    )
    response = send(events_app, mode(sent, JSONFormat()))
    assert response.status_code == 202, response.json
    event = core.get_event(response.json["event_id"]).event
    back = event.to_cloudevent()
    assert back["edaid"] == event.id
    came_in = {k: v for k, v in sent.get_attributes().items() if k != "correlationid"}
    came_in["time"] = "2026-01-02T03:04:05Z"
    # Everything that came in, as it came in (lineage excepted: it is never a sender's).
    assert {k: back[k] for k in came_in} == came_in
    assert back["data"] == {"severity": "high", "count": 3}
    assert "correlationid" not in back


@pytest.mark.parametrize("tamper", ["wrong-secret", "unsigned", "altered", "stale"])
def test_an_unverified_cloudevent_is_refused(
    events_app: FlaskClient, core: Core, tamper: str
) -> None:
    message = to_structured(cloudevent("u-1"), JSONFormat())
    body = message.body
    wrong = "whsec_" + "b3RoZXIga2V5IG9mIHRoaXJ0eS10d28gYnl0ZXMhISE="
    when = datetime.now(UTC)
    if tamper == "stale":
        when = datetime.fromtimestamp(when.timestamp() - 301, UTC)
    signing = standard_headers(
        body, secret=wrong if tamper == "wrong-secret" else STANDARD_SECRET, when=when
    )
    if tamper == "unsigned":
        signing = {}
    if tamper == "altered":
        body = one_byte_altered(body)
    signing.pop("Content-Type", None)
    response = events_app.post("/events", data=body, headers={**message.headers, **signing})
    assert response.status_code == 401
    assert stored(core) == []


def test_the_abuse_protection_handshake_allows_configured_origins_only(core: Core) -> None:
    def app_allowing(origins: str) -> FlaskClient:
        settings = load({"EDA_CLOUDEVENTS_ALLOWED_ORIGINS": origins})
        allowed = {"cloudevents_allowed_origins": settings.cloudevents_allowed_origins}
        return create_app(core, core.settings.model_copy(update=allowed)).test_client()

    app = app_allowing("eventemitter.example.com, b.example")
    allowed = app.options(
        "/events",
        headers={
            "WebHook-Request-Origin": "eventemitter.example.com",
            "WebHook-Request-Rate": "120",
        },
    )
    assert allowed.status_code == 200
    assert allowed.headers["WebHook-Allowed-Origin"] == "eventemitter.example.com"
    assert allowed.headers["WebHook-Allowed-Rate"] == "*"
    other = app.options("/events", headers={"WebHook-Request-Origin": "evil.example"})
    assert other.status_code == 403 and "WebHook-Allowed-Origin" not in other.headers
    assert app.options("/events").status_code == 400
    anyone = app_allowing("*")
    answer = anyone.options("/events", headers={"WebHook-Request-Origin": "x.example"})
    assert answer.headers["WebHook-Allowed-Origin"] == "x.example"
    assert "WebHook-Allowed-Rate" not in answer.headers


# -- senders with a token ---------------------------------------------------------------------

ACME_TOKEN = "acme-token-0123456789abcdef"
OTHER_TOKEN = "other-token-0123456789abcdef"


@pytest.fixture
def token_app(core: Core) -> FlaskClient:
    return app_client(
        core,
        EDA_WEBHOOK_SECRET_EVENTS=STANDARD_SECRET,
        EDA_EVENTS_TOKEN_ACME=ACME_TOKEN,
        EDA_EVENTS_TOKEN_OTHER=OTHER_TOKEN,
    )


def send_with(client: FlaskClient, message: HTTPMessage, credential: dict[str, str]) -> Any:
    return client.post("/events", data=message.body, headers={**message.headers, **credential})


@pytest.mark.parametrize(
    "credential",
    [{"Authorization": f"Bearer {ACME_TOKEN}"}, {"X-Api-Key": ACME_TOKEN}],
    ids=["bearer", "api-key"],
)
@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_a_sender_with_a_token_gets_in_and_dedupes_in_its_own_namespace(
    token_app: FlaskClient, core: Core, credential: dict[str, str], mode: str
) -> None:
    build = to_binary if mode == "binary" else to_structured
    response = send_with(token_app, build(cloudevent("tok-1"), JSONFormat()), credential)
    assert response.status_code == 202, response.json
    event = core.get_event(response.json["event_id"]).event
    assert event.dedupe_key == "events/acme:ce:/monitoring/prod:tok-1"
    assert event.payload == {"severity": "high", "count": 3}
    again = send_with(token_app, build(cloudevent("tok-1"), JSONFormat()), credential)
    assert (again.status_code, again.json["event_id"]) == (200, event.id)


def test_each_sender_dedupes_apart_from_the_others_and_from_signed_requests(
    token_app: FlaskClient, core: Core
) -> None:
    message = to_structured(cloudevent("shared-id"), JSONFormat())
    acme = send_with(token_app, message, {"Authorization": f"Bearer {ACME_TOKEN}"})
    other = send_with(token_app, message, {"X-Api-Key": OTHER_TOKEN})
    signed = send(token_app, message)
    assert [r.status_code for r in (acme, other, signed)] == [202, 202, 202]
    assert len({acme.json["event_id"], other.json["event_id"], signed.json["event_id"]}) == 3


@pytest.mark.parametrize(
    "credential",
    [
        {},
        {"Authorization": "Bearer not-a-token-of-anyone-here"},
        {"Authorization": f"Basic {ACME_TOKEN}"},
        {"X-Api-Key": ACME_TOKEN[:-1]},
        {"X-Api-Key": ""},
    ],
    ids=["none", "wrong-bearer", "basic", "wrong-key", "empty-key"],
)
def test_a_request_without_a_valid_signature_or_token_is_refused(
    token_app: FlaskClient, core: Core, credential: dict[str, str]
) -> None:
    response = send_with(token_app, to_binary(cloudevent("x-1"), JSONFormat()), credential)
    assert response.status_code == 401
    assert response.json["error"] == "unauthorized"
    assert ACME_TOKEN not in response.get_data(as_text=True)
    assert stored(core) == []


def test_a_token_is_refused_where_no_sender_has_one(events_app: FlaskClient, core: Core) -> None:
    message = to_structured(cloudevent("t-2"), JSONFormat())
    response = send_with(events_app, message, {"Authorization": f"Bearer {ACME_TOKEN}"})
    assert response.status_code == 401
    assert stored(core) == []


def test_a_short_or_misnamed_sender_token_is_refused_at_start() -> None:
    with pytest.raises(InvalidInput) as short:
        load({"EDA_EVENTS_TOKEN_ACME": "short"})
    assert short.value.field == "EDA_EVENTS_TOKEN_ACME"
    assert "short" not in str(short.value)
    with pytest.raises(InvalidInput) as misnamed:
        load({"EDA_EVENTS_TOKEN_NO-DASH": ACME_TOKEN})
    assert misnamed.value.field == "EDA_EVENTS_TOKEN_NO-DASH"
    settings = load({"EDA_EVENTS_TOKEN_ACME": ACME_TOKEN})
    assert ACME_TOKEN not in repr(settings) and ACME_TOKEN not in str(settings.model_dump())
