"""The admin API under /api/: bearer token, events, dead letters, replay, subscriptions, stats."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from flask.testing import FlaskClient
from openapi_spec_validator import validate

from eda.core import Core
from eda.dead_letters import DeadLetter
from tests.conftest import wait_for
from tests.http_support import app_client, http, serve, with_secrets
from tests.lifecycle import kill
from webhooks import create_app

TOKEN = "admin-token-for-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def api(core: Core) -> FlaskClient:
    return app_client(core, EDA_ADMIN_TOKEN=TOKEN)


def dead_letter(core: Core, handler: str = "tests.handlers:fail") -> DeadLetter:
    """A dead letter for a stored event, written through the core's dead-letter store."""
    event_id = core.publish("order.failed", {"order": 1}, "test").event_id
    event = core.get_event(event_id).event
    return kill(
        core.deliveries,
        event,
        handler,
        "it broke",
        task="t-1",
        error_class="PermanentError",
        traceback="Traceback ...",
    )


# -- access -----------------------------------------------------------------------------------

ENDPOINTS = [
    ("GET", "/api/events"),
    ("POST", "/api/events"),
    ("GET", "/api/dead-letters"),
    ("POST", "/api/replay"),
    ("GET", "/api/subscriptions"),
    ("GET", "/api/stats"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_without_a_configured_token_the_admin_api_is_off(
    core: Core, method: str, path: str
) -> None:
    response = create_app(core).test_client().open(path, method=method, headers=AUTH)
    assert response.status_code == 403
    assert response.json["error"] == "admin_api_disabled"


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-token"),
        pytest.param({"Authorization": "Bearer wrong-token"}, id="wrong-token"),
        pytest.param({"Authorization": f"Basic {TOKEN}"}, id="wrong-scheme"),
        pytest.param({"Authorization": f"Bearer {TOKEN}x"}, id="token-plus-one"),
    ],
)
def test_a_missing_or_wrong_token_is_refused(
    api: FlaskClient, core: Core, method: str, path: str, headers: dict[str, str]
) -> None:
    response = api.open(path, method=method, headers=headers, json={"type": "a.b"})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert core.history() == []


def test_the_right_token_over_real_http_is_let_in(core: Core) -> None:
    with serve(create_app(core, with_secrets(core.settings, EDA_ADMIN_TOKEN=TOKEN))) as url:
        status, _, body = http("GET", f"{url}/api/stats", headers=AUTH)
        refused, _, _ = http("GET", f"{url}/api/stats", headers={"Authorization": "Bearer nope"})
    assert (status, refused) == (200, 401)
    assert body["stored"] == 0


# -- events -----------------------------------------------------------------------------------


def test_publish_then_get_and_list(api: FlaskClient, core: Core) -> None:
    published = api.post(
        "/api/events",
        headers=AUTH,
        json={"type": "customer.signup", "payload": {"email": "a@example.com"}, "source": "crm"},
    )
    assert published.status_code == 202
    event_id = published.json["event_id"]
    fetched = api.get(f"/api/events/{event_id}", headers=AUTH)
    assert fetched.status_code == 200
    assert (fetched.json["type"], fetched.json["source"], fetched.json["status"]) == (
        "customer.signup",
        "crm",
        "pending",
    )
    assert core.get_event(event_id).event.payload == {"email": "a@example.com"}
    listed = api.get("/api/events?type=customer.signup&since=1h&limit=5", headers=AUTH)
    assert [e["id"] for e in listed.json["events"]] == [event_id]


def test_listing_filters_by_type_time_limit_and_order(api: FlaskClient, core: Core) -> None:
    ids = [core.publish("metric.sample", {"n": n}, "test").event_id for n in range(3)]
    core.publish("other.thing", {}, "test")
    newest = api.get("/api/events?type=metric.sample&limit=2", headers=AUTH).json["events"]
    oldest = api.get("/api/events?type=metric.sample&order=oldest", headers=AUTH).json["events"]
    future = api.get("/api/events?since=2999-01-01T00:00:00Z", headers=AUTH).json["events"]
    past = api.get("/api/events?until=2000-01-01", headers=AUTH).json["events"]
    assert [e["id"] for e in newest] == ids[::-1][:2]
    assert [e["id"] for e in oldest] == ids
    assert future == past == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("since=yesterday-ish", "since"),
        ("until=not-a-time", "until"),
        ("limit=ten", "limit"),
        ("limit=0", "limit"),
        ("order=random", "order"),
        ("type=Not A Type", "type"),
    ],
)
def test_bad_filters_are_refused_naming_the_field(api: FlaskClient, query: str, field: str) -> None:
    response = api.get(f"/api/events?{query}", headers=AUTH)
    assert response.status_code == 400
    assert response.json["field"] == field


def test_publishing_twice_with_one_dedupe_key_answers_the_original(api: FlaskClient) -> None:
    event = {"type": "order.created", "payload": {}, "dedupe_key": "order-1"}
    first = api.post("/api/events", headers=AUTH, json=event)
    again = api.post("/api/events", headers=AUTH, json=event)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json == {"event_id": first.json["event_id"], "duplicate": True}


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b'{"type": "a.b", "id": "mine"}', "application/json", 400),
        (b'{"payload": {}}', "application/json", 400),
        (b"[1, 2]", "application/json", 400),
        (b"{not json", "application/json", 400),
        (b'{"type": "a.b"}', "text/plain", 415),
    ],
)
def test_a_bad_publish_is_refused(
    api: FlaskClient, core: Core, body: bytes, content_type: str, status: int
) -> None:
    response = api.post("/api/events", headers={**AUTH, "Content-Type": content_type}, data=body)
    assert response.status_code == status
    assert response.json["error"]
    assert core.history() == []


def test_an_unknown_event_is_404(api: FlaskClient) -> None:
    response = api.get("/api/events/no-such-id", headers=AUTH)
    assert (response.status_code, response.json["error"]) == (404, "not_found")


def test_acknowledge_sets_the_status_and_says_what_it_was(api: FlaskClient, core: Core) -> None:
    event_id = core.publish("task.done", {}, "test").event_id
    response = api.post(
        f"/api/events/{event_id}/acknowledge",
        headers=AUTH,
        json={"status": "ignored", "reason": "noise"},
    )
    assert response.json == {
        "event_id": event_id,
        "status": "ignored",
        "previous_status": "pending",
    }
    assert core.get_event(event_id).status == "ignored"


# -- dead letters -----------------------------------------------------------------------------


def test_dead_letters_are_listed_filtered_and_shown(api: FlaskClient, core: Core) -> None:
    letter = dead_letter(core)
    listed = api.get("/api/dead-letters?type=order.failed", headers=AUTH).json
    assert ([item["id"] for item in listed["dead_letters"]], listed["more"]) == ([letter.id], 0)
    assert (
        api.get("/api/dead-letters?handler=someone.else", headers=AUTH).json["dead_letters"] == []
    )
    shown = api.get(f"/api/dead-letters/{letter.id}", headers=AUTH)
    assert (shown.json["error"], shown.json["handler"]) == ("it broke", "tests.handlers:fail")
    assert api.get("/api/dead-letters/nope:nothing", headers=AUTH).status_code == 404


def test_discarding_needs_a_reason_and_removes_the_letter(api: FlaskClient, core: Core) -> None:
    letter = dead_letter(core)
    no_reason = api.post(f"/api/dead-letters/{letter.id}/discard", headers=AUTH, json={})
    assert (no_reason.status_code, no_reason.json["field"]) == (400, "reason")
    discarded = api.post(
        f"/api/dead-letters/{letter.id}/discard", headers=AUTH, json={"reason": "obsolete order"}
    )
    assert discarded.status_code == 200
    assert discarded.json["discarded"]["id"] == letter.id
    assert core.dead_letter_list() == []


def test_retrying_without_a_broker_is_a_misconfiguration_not_a_503_and_keeps_the_letter(
    api: FlaskClient, core: Core
) -> None:
    letter = dead_letter(core)
    one = api.post(f"/api/dead-letters/{letter.id}/retry", headers=AUTH)
    batch = api.post("/api/dead-letters/retry-batch", headers=AUTH, json={"type": "order.failed"})
    event = api.post(f"/api/events/{letter.event_id}/retry", headers=AUTH)
    for response in (one, batch, event):
        assert (response.status_code, response.json["error"]) == (500, "no_broker")
        assert "no broker is configured" in response.json["message"]
        assert "Retry-After" not in response.headers
    assert [x.id for x in core.dead_letter_list()] == [letter.id]
    assert core.get_event(letter.event_id).deliveries[letter.handler]["status"] == "dead"


def test_a_batch_retry_that_matches_nothing_retries_nothing(api: FlaskClient) -> None:
    response = api.post("/api/dead-letters/retry-batch", headers=AUTH, json={"handler": "nobody"})
    assert (response.status_code, response.json) == (200, {"retried": [], "left": 0})


# -- replay, subscriptions, stats -------------------------------------------------------------


def test_subscriptions_are_added_listed_and_removed(api: FlaskClient, core: Core) -> None:
    added = api.post(
        "/api/subscriptions", headers=AUTH, json={"event_types": ["code.*"], "handler": "Reviewer"}
    )
    assert added.status_code == 201
    listed = api.get("/api/subscriptions", headers=AUTH).json["subscriptions"]
    assert [(s["pattern"], s["handler"]) for s in listed] == [("code.*", "Reviewer")]
    removed = api.delete("/api/subscriptions?pattern=code.*&handler=Reviewer", headers=AUTH)
    assert removed.status_code == 200
    assert core.subscriptions() == []
    again = api.delete("/api/subscriptions?pattern=code.*&handler=Reviewer", headers=AUTH)
    assert again.status_code == 404


def test_a_bad_subscription_is_refused(api: FlaskClient) -> None:
    response = api.post(
        "/api/subscriptions", headers=AUTH, json={"event_types": ["Bad Pattern"], "handler": "x"}
    )
    assert (response.status_code, response.json["field"]) == (400, "event_types")


def test_a_dry_run_replay_says_what_it_would_do_and_a_real_one_needs_a_broker(
    api: FlaskClient, core: Core
) -> None:
    api.post(
        "/api/subscriptions",
        headers=AUTH,
        json={"event_types": "code.pushed", "handler": "Reviewer"},
    )
    event_id = core.publish("code.pushed", {"ref": "main"}, "test").event_id
    dry = api.post(
        "/api/replay", headers=AUTH, json={"type": "code.pushed", "since": "1h", "dry_run": True}
    )
    assert dry.status_code == 200
    assert dry.json["items"] == [
        {"event_id": event_id, "type": "code.pushed", "handler": "Reviewer"}
    ]
    real = api.post("/api/replay", headers=AUTH, json={"type": "code.pushed"})
    assert (real.status_code, real.json["error"]) == (500, "no_broker")
    bad = api.post("/api/replay", headers=AUTH, json={"dry_run": "yes"})
    assert (bad.status_code, bad.json["field"]) == (400, "dry_run")


def test_stats_count_what_is_stored(api: FlaskClient, core: Core) -> None:
    core.publish("metric.sample", {}, "test")
    dead_letter(core)
    stats = api.get("/api/stats", headers=AUTH).json
    assert (stats["stored"], stats["dead_letters"]) == (2, 1)
    assert stats["events"]["metric.sample"] == {"pending": 1}


def test_with_redis_down_the_admin_api_answers_503(make_settings: Any) -> None:
    from eda.redis_server import free_port

    settings = make_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", admin_token=TOKEN)
    client = create_app(Core(settings)).test_client()
    for path in ("/api/events", "/api/stats", "/api/subscriptions", "/api/dead-letters"):
        response = client.get(path, headers=AUTH)
        assert response.status_code == 503, path
        assert response.headers["Retry-After"]


# -- the OpenAPI document ---------------------------------------------------------------------


def test_the_openapi_document_is_valid_public_and_describes_every_route(core: Core) -> None:
    app = create_app(core)
    response = app.test_client().get("/api/openapi.json")
    assert response.status_code == 200
    document = response.json
    validate(document)
    assert document["openapi"].startswith("3.1")
    described = {
        (path, method.upper()) for path, item in document["paths"].items() for method in item
    }
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = rule.rule.replace("<path:", "{").replace("<", "{").replace(">", "}")
        path = path.replace("{name}", "{source}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method) in described, (path, method)


# -- through a real worker --------------------------------------------------------------------


def test_a_dead_letter_retried_through_the_api_is_delivered_again(live: Core, client: Any) -> None:
    event_type = f"t{uuid.uuid4().hex[:10]}.admin_retry"
    handler = "tests.handlers:fixable"
    live.subscribe([event_type], handler)
    event_id = uuid.uuid4().hex
    client.set(f"test-broken:{event_id}", "1")
    live.publish(event_type, {}, "test", id=event_id)
    letter_id = f"{event_id}:{handler}"
    wait_for(lambda: live.dead_letter_list(event_type=event_type))
    client.delete(f"test-broken:{event_id}")
    api = create_app(live, with_secrets(live.settings, EDA_ADMIN_TOKEN=TOKEN)).test_client()
    response = api.post(f"/api/dead-letters/{letter_id}/retry", headers=AUTH)
    assert response.status_code == 200
    assert response.json["event_id"] == event_id
    wait_for(lambda: live.get_event(event_id).deliveries[handler]["status"] == "succeeded")
    assert live.dead_letter_list(event_type=event_type) == []
