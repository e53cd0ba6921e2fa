"""Slack messages: an alert, AlertResponder (the shipped agent, its model scripted by the
local Messages API server), its notification, and the Slack destination that turns it
into blocks for an incoming webhook (a local receiver)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from slack_sdk.models.blocks import Block

from eda.core import Core
from eda.event import Event
from eda.slack import message
from tests.conftest import RedisServer, wait_for
from tests.messages_api import (
    MessagesAPI,
    messages_api_server,
    text,
    tool_use,
)
from tests.messages_api import (
    message as reply,
)
from tests.receivers import Receiver, serve_receiver
from tests.test_agents_worker import settled
from tests.workers import core_with_worker, module_env

__all__ = ["messages_api_server"]  # a fixture used below

pytestmark = pytest.mark.timeout(90)

ROUTES = """routes:
  - events: [alert.triggered]
    handler: AlertResponder
  - events: [notification.requested]
    destination: {name: slack, url_secret: EDA_DESTINATION_SECRET_SLACK_URL, format: slack}
"""


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    yield from serve_receiver()


@pytest.fixture(scope="module")
def slack_core(
    redis_server: RedisServer,
    receiver: Receiver,
    messages_api_server: MessagesAPI,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Core]:
    folder = tmp_path_factory.mktemp("slack")
    (folder / "routes.yaml").write_text(ROUTES)
    env = module_env(
        "slack",
        redis_server.url,
        13,
        folder / "routes.yaml",
        messages_api_server.url,
        EDA_DESTINATION_SECRET_SLACK_URL=f"{receiver.url}/services/T000/B000/XXXX",
        EDA_DESTINATION_ALLOWED_NETWORKS="127.0.0.1/32",
    )
    with core_with_worker(env, folder) as core:
        yield core


def test_an_alert_leads_to_a_slack_message(
    slack_core: Core, receiver: Receiver, messages_api_server: MessagesAPI
) -> None:
    service = f"checkout-{uuid.uuid4().hex[:6]}"
    notification = {
        "team": "payments",
        "severity": "critical",
        "summary": f"{service} returns 502 for every request since 09:14 <@here>",
    }
    messages_api_server.script(
        reply(
            tool_use(
                "publish_event",
                {"event_type": "notification.requested", "payload": json.dumps(notification)},
            )
        ),
        reply(text("Notified the payments team.")),
        match=service,
    )

    alert = slack_core.publish(
        "alert.triggered", {"severity": "critical", "service": service}, "monitoring"
    )
    assert (
        settled(slack_core, alert.event_id, "AlertResponder", "succeeded", "dead")["status"]
        == "succeeded"
    )

    (received,) = wait_for(lambda: receiver.received("/services/T000/B000/XXXX"), timeout=20)
    sent = received.json()
    assert sent["text"].startswith("notification.requested: ")
    header, body, fields, context = sent["blocks"]
    assert header["type"] == "header"
    assert body["text"]["text"] == (
        f":red_circle: {service} returns 502 for every request since 09:14 &lt;@here&gt;"
    )
    assert {"type": "mrkdwn", "text": "*team*\npayments"} in fields["fields"]
    assert "AlertResponder" in context["elements"][0]["text"]
    for block in sent["blocks"]:
        Block.parse(block).validate_json()  # Slack's own SDK accepts every block


def test_any_event_renders_as_blocks_slack_accepts() -> None:
    event = Event.create(
        type="deploy.finished",
        source="ci",
        payload={"title": "x" * 400, "message": "y" * 5000, "nested": {"a": 1}, "count": 3},
    )
    rendered = message(event)
    assert len(rendered["blocks"][0]["text"]["text"]) <= 150
    assert {"type": "mrkdwn", "text": "*count*\n3"} in rendered["blocks"][2]["fields"]
    for block in rendered["blocks"]:
        Block.parse(block).validate_json()
