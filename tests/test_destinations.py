"""Destinations: events POSTed out, signed, through a real worker to a local HTTP server.

The module runs a worker of its own (its own broker database and prefix) whose routes
file declares destinations on a local receiver, with loopback allowed through
``EDA_DESTINATION_ALLOWED_NETWORKS``; what it receives is checked with the
``standardwebhooks`` library.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from standardwebhooks import Webhook

import tasks
from eda.core import Core
from eda.errors import InvalidInput
from eda.settings import Settings
from scripts.cli import main
from tests.conftest import RedisServer
from tests.http_support import STANDARD_SECRET
from tests.receivers import Receiver, serve_receiver
from tests.test_agents_worker import settled
from tests.workers import core_with_worker

pytestmark = pytest.mark.timeout(90)

HOOK = "destination:hook"
GONE = "destination:gone"
SLOW = "destination:slow"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    yield from serve_receiver()


def routes_file(folder: Path, receiver: Receiver) -> Path:
    path = folder / "routes.yaml"
    path.write_text(
        f"""routes:
  - events: ["desthook.*"]
    destination:
      name: hook
      url: {receiver.url}/hook
      secret: EDA_DESTINATION_SECRET_HOOK
      headers: {{X-Team: platform}}
    retry: {{max_retries: 3}}
  - events: ["destgone.*"]
    destination: {{name: gone, url: "{receiver.url}/gone", format: envelope}}
  - events: ["destslow.*"]
    destination: {{name: slow, url: "{receiver.url}/slow", timeout: 0.5}}
    retry: {{max_retries: 3}}
"""
    )
    return path


@pytest.fixture(scope="module")
def destination_env(
    redis_server: RedisServer, receiver: Receiver, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    return {
        "EDA_PREFIX": f"dest-{uuid.uuid4().hex[:8]}",
        "CELERY_BROKER_URL": redis_server.url.rsplit("/", 1)[0] + "/11",
        "EDA_ROUTES": str(routes_file(tmp_path_factory.mktemp("dest-routes"), receiver)),
        "EDA_DESTINATION_ALLOWED_NETWORKS": "127.0.0.0/8",
        "EDA_DESTINATION_SECRET_HOOK": STANDARD_SECRET,
    }


@pytest.fixture(scope="module")
def dest_core(
    destination_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Core]:
    with core_with_worker(destination_env, tmp_path_factory.mktemp("dest-worker")) as core:
        yield core


def test_a_503_then_200_is_retried_with_the_same_signed_webhook_id(
    dest_core: Core, receiver: Receiver
) -> None:
    event_type = f"desthook.t{uuid.uuid4().hex[:8]}"
    receiver.script(event_type, (503, "busy"), (200, "ok"))

    event_id = dest_core.publish(event_type, {"service": "checkout"}, "monitoring").event_id
    delivery = settled(dest_core, event_id, HOOK, "succeeded", "dead")

    assert delivery["status"] == "succeeded", delivery
    first, second = receiver.received(event_type)
    assert first.headers["Webhook-Id"] == second.headers["Webhook-Id"] == f"{event_id}:{HOOK}"
    for seen in (first, second):
        headers = {name.lower(): value for name, value in seen.headers.items()}
        cloudevent = Webhook(STANDARD_SECRET).verify(seen.body, headers)
        assert cloudevent["type"] == event_type and cloudevent["data"] == {"service": "checkout"}
        assert headers["content-type"] == "application/cloudevents+json"
        assert headers["x-team"] == "platform"
    attempts = delivery["runs"][-1]["attempts"]
    assert [a["status"] for a in attempts] == ["retrying", "succeeded"]
    assert "HTTP 503 from destination:hook: busy" in attempts[0]["reason"]
    assert delivery["outcome"] == {"destination": HOOK, "status": 200}


@pytest.mark.parametrize(
    ("events", "handler", "first", "reason"),
    [
        ("desthook", HOOK, (408, "request timeout"), f"HTTP 408 from {HOOK}: request timeout"),
        (
            "destslow",
            SLOW,
            (200, "too late", {}, 2.0),
            "could not reach the destination: timed out",
        ),
    ],
    ids=["408", "slower-than-its-timeout"],
)
def test_a_408_or_an_answer_slower_than_the_timeout_is_retried(
    dest_core: Core,
    receiver: Receiver,
    events: str,
    handler: str,
    first: tuple[int, str] | tuple[int, str, dict[str, str], float],
    reason: str,
) -> None:
    event_type = f"{events}.t{uuid.uuid4().hex[:8]}"
    receiver.script(event_type, first, (200, "ok"))

    event_id = dest_core.publish(event_type, {}, "monitoring").event_id
    delivery = settled(dest_core, event_id, handler, "succeeded", "dead")

    assert delivery["status"] == "succeeded", delivery
    assert len(receiver.received(event_type)) == 2
    attempts = delivery["runs"][-1]["attempts"]
    assert [a["status"] for a in attempts] == ["retrying", "succeeded"]
    assert reason in attempts[0]["reason"]


def test_a_429_waits_its_retry_after(dest_core: Core, receiver: Receiver) -> None:
    event_type = f"desthook.t{uuid.uuid4().hex[:8]}"
    receiver.script(event_type, (429, "slow down", {"Retry-After": "0.35"}), (204, ""))

    event_id = dest_core.publish(event_type, {}, "monitoring").event_id
    assert settled(dest_core, event_id, HOOK, "succeeded", "dead")["status"] == "succeeded"
    assert len(receiver.received(event_type)) == 2
    attempts = dest_core.get_event(event_id).deliveries[HOOK]["runs"][-1]["attempts"]
    waited = re.search(r"next try in ([\d.]+) s", attempts[0]["reason"])
    assert waited is not None and float(waited.group(1)) >= 0.35, attempts[0]["reason"]


def test_a_400_dead_letters_with_the_status_and_the_start_of_the_body(
    dest_core: Core, receiver: Receiver
) -> None:
    event_type = f"desthook.t{uuid.uuid4().hex[:8]}"
    receiver.script(event_type, (400, '{"error": "field \\"service\\" is required"} ' + "x" * 900))

    event_id = dest_core.publish(event_type, {}, "monitoring").event_id
    assert settled(dest_core, event_id, HOOK, "succeeded", "dead")["status"] == "dead"

    letter = dest_core.dead_letter(f"{event_id}:{HOOK}")
    assert letter.attempts == 1 and letter.error_class.endswith("PermanentError")
    assert letter.error.startswith('HTTP 400 from destination:hook: {"error": "field')
    assert len(letter.error) < 400  # an excerpt, not the whole body
    assert len(receiver.received(event_type)) == 1


def test_a_redirect_is_dead_lettered_not_followed(dest_core: Core, receiver: Receiver) -> None:
    event_type = f"desthook.t{uuid.uuid4().hex[:8]}"
    elsewhere = f"{receiver.url}/elsewhere-{event_type}"
    receiver.script(event_type, (302, "moved", {"Location": elsewhere}))

    event_id = dest_core.publish(event_type, {}, "monitoring").event_id
    assert settled(dest_core, event_id, HOOK, "succeeded", "dead")["status"] == "dead"

    letter = dest_core.dead_letter(f"{event_id}:{HOOK}")
    assert letter.attempts == 1 and letter.error_class.endswith("PermanentError")
    assert letter.error.startswith("HTTP 302 from destination:hook: moved (a redirect")
    (only,) = receiver.received(event_type)  # the Location was never asked
    assert only.path == "/hook"


def test_a_410_disables_the_destination_until_it_is_enabled(
    dest_core: Core, receiver: Receiver
) -> None:
    tag = uuid.uuid4().hex[:8]
    receiver.script(f"destgone.{tag}a", (410, "this hook was deleted"))

    gone = dest_core.publish(f"destgone.{tag}a", {}, "monitoring").event_id
    assert settled(dest_core, gone, GONE, "dead")["status"] == "dead"
    assert "disabled until enabled again" in dest_core.dead_letter(f"{gone}:{GONE}").error
    (listed,) = [d for d in dest_core.destinations() if d["handler"] == GONE]
    assert listed["disabled"]["status"] == 410

    skipped = dest_core.publish(f"destgone.{tag}b", {}, "monitoring").event_id
    delivery = settled(dest_core, skipped, GONE, "skipped", "succeeded", "dead")
    assert delivery["status"] == "skipped"
    assert "destination:gone is disabled since" in delivery["history"][-1]["reason"]
    assert receiver.received(f"destgone.{tag}b") == []

    listed_cli = CliRunner().invoke(main, ["destinations", "--json"], obj=dest_core)
    assert json.loads(listed_cli.output)[1]["disabled"]["reason"] == "410 Gone"
    enabled = CliRunner().invoke(main, ["destinations", "enable", "gone"], obj=dest_core)
    assert enabled.exit_code == 0 and "destination:gone enabled" in enabled.output
    sent = dest_core.publish(f"destgone.{tag}c", {"n": 3}, "monitoring").event_id
    assert settled(dest_core, sent, GONE, "succeeded", "dead")["status"] == "succeeded"
    (envelope,) = receiver.received(f"destgone.{tag}c")
    assert envelope.json()["id"] == sent and envelope.json()["payload"] == {"n": 3}


# -- refused at start --------------------------------------------------------------------------


def write_routes(folder: Path, destination: str) -> Path:
    path = folder / f"routes-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(f"routes:\n  - events: [x.y]\n    destination: {destination}\n")
    return path


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://169.254.169.254/latest/meta-data", "link-local address (cloud metadata"),
        ("https://10.0.0.1/hook", "10.0.0.1 is a private address"),
        ("http://127.0.0.1:8080/", "127.0.0.1 is a loopback address"),
        ("http://[::ffff:169.254.169.254]/", "link-local"),
        ("ftp://example.com/x", "must be an http:// or https:// URL"),
    ],
)
def test_a_destination_to_a_non_public_address_is_refused_at_start(
    make_settings: Callable[..., Settings], tmp_path: Path, url: str, why: str
) -> None:
    path = write_routes(tmp_path, f"{{name: probe, url: '{url}'}}")
    with pytest.raises(InvalidInput) as refused:
        tasks.handlers(make_settings(routes_path=path))
    assert str(refused.value).startswith(f"{path}:3: routes[0].destination.url: ")
    assert why in str(refused.value)


def test_allowed_networks_and_internal_open_private_addresses_but_never_metadata(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    allowed = make_settings(
        routes_path=write_routes(tmp_path, "{name: a, url: 'https://10.0.0.1/hook'}"),
        destination_allowed_networks=("10.0.0.0/8",),
    )
    assert "destination:a" in tasks.handlers(allowed)[0].names()
    internal = make_settings(
        routes_path=write_routes(tmp_path, "{name: b, url: 'http://10.1.2.3/', internal: true}")
    )
    assert "destination:b" in tasks.handlers(internal)[0].names()
    metadata = make_settings(
        routes_path=write_routes(
            tmp_path, "{name: c, url: 'http://169.254.169.254/', internal: true}"
        )
    )
    with pytest.raises(InvalidInput, match="link-local"):
        tasks.handlers(metadata)


def test_a_signing_secret_that_is_unset_stops_start_naming_the_variable(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    path = write_routes(
        tmp_path, "{name: s, url: 'https://example.com/', secret: EDA_DESTINATION_SECRET_NOPE}"
    )
    with pytest.raises(InvalidInput, match="EDA_DESTINATION_SECRET_NOPE is unset"):
        tasks.handlers(make_settings(routes_path=path))
    other = write_routes(tmp_path, "{name: s, url: 'https://example.com/', secret: MY_SECRET}")
    with pytest.raises(InvalidInput, match="not a destination secret"):
        tasks.handlers(make_settings(routes_path=other))


def test_every_type_the_shipped_agents_publish_has_a_consumer_and_stats_name_the_rest(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    shipped = tasks.connect(make_settings())
    assert shipped.stats()["unconsumed_types"] == []
    assert shipped.destinations() == [{"handler": "destination:slack", "disabled": None}]

    bare = tmp_path / "routes.yaml"
    bare.write_text("routes:\n  - events: [alert.triggered]\n    handler: AlertResponder\n")
    core = tasks.connect(make_settings(routes_path=bare))
    assert "notification.requested" in core.stats()["unconsumed_types"]
    core.subscribe(["notification.*"], "tests.handlers:succeed")
    assert "notification.requested" not in core.unconsumed_types()
    assert "dlq.triaged" in core.unconsumed_types()
