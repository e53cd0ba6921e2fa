"""Agents as Celery deliveries: real workers, the real SDK, a local Messages API server.

The module starts a worker of its own, with its own broker and key prefix, whose
environment points the SDK at the module's Messages API server (ANTHROPIC_BASE_URL,
ANTHROPIC_API_KEY) and whose agents file is tests/agents.yaml. The session's
shared worker (no API key) runs the shipped AlertResponder dry.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import tasks
from agents.backend import has_credentials
from eda.core import Core
from eda.settings import load
from tasks.enqueue import CeleryEnqueuer
from tests.agent_tools import executed
from tests.brokers import own_redis
from tests.conftest import settled
from tests.messages_api import (
    TEST_API_KEY,
    MessagesAPI,
    error,
    message,
    messages_api_server,
    text,
    tool_use,
)
from tests.workers import FAST, ROOT, Worker

__all__ = ["messages_api_server"]  # a fixture used below

pytestmark = pytest.mark.timeout(60)

AGENT = "TestResponder"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis of the module's own for the broker, so no other worker takes its messages."""
    with own_redis(tmp_path_factory.mktemp("agent-broker")) as url:
        yield f"{url}/0"


@pytest.fixture(scope="module")
def agents_core(
    broker: str, messages_api_server: MessagesAPI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Core]:
    """The dispatching core of a worker whose agents talk to the module's Messages API."""
    env = {
        "EDA_PREFIX": f"agents-{uuid.uuid4().hex[:8]}",
        "CELERY_BROKER_URL": broker,
        "EDA_AGENTS": str(ROOT / "tests" / "agents.yaml"),
        "ANTHROPIC_BASE_URL": messages_api_server.url,
        "ANTHROPIC_API_KEY": TEST_API_KEY,
    }
    worker = Worker(tmp_path_factory.mktemp("agent-worker") / "worker.log", env=env)
    settings = load({**os.environ, **FAST, **env})
    try:
        yield Core(settings, enqueuer=CeleryEnqueuer(tasks.app, broker_url=broker))
    finally:
        worker.stop()


def routed_type(core: Core, handler: str = AGENT) -> str:
    event_type = f"t{uuid.uuid4().hex[:10]}.happened"
    core.subscribe([event_type], handler)
    return event_type


def test_a_two_tool_conversation_runs_end_to_end_through_a_worker(
    agents_core: Core, messages_api_server: MessagesAPI, client: Any
) -> None:
    event_type = routed_type(agents_core)
    script = messages_api_server.script(
        message(tool_use("lookup_service", {"service": "checkout"}), input_tokens=500),
        message(tool_use("get_event_history", {"event_type": event_type}), input_tokens=700),
        message(text("team-payments owns checkout; this is its first alert."), input_tokens=900),
        match=event_type,
    )

    event_id = agents_core.publish(event_type, {"service": "checkout"}, "monitoring").event_id
    delivery = settled(agents_core, event_id, AGENT, "succeeded", "dead")

    assert delivery["status"] == "succeeded", delivery
    outcome = delivery["outcome"]
    assert outcome["outcome"] == "completed" and outcome["turns"] == 3
    assert outcome["model"] == "claude-haiku-5-5" and outcome["backend"] == "anthropic"
    assert [c["name"] for c in outcome["tool_calls"]] == ["lookup_service", "get_event_history"]
    assert event_id in outcome["tool_calls"][1]["result"]  # the script read this store
    assert outcome["usage"]["input_tokens"] == 2100
    assert executed(client, agents_core.settings.prefix, event_id) == [
        {"name": "lookup_service", "input": {"service": "checkout"}}
    ]
    assert len(script.requests) == 3 and agents_core.get_event(event_id).status == "succeeded"


def test_a_429_is_retried_after_at_least_its_retry_after(
    agents_core: Core, messages_api_server: MessagesAPI
) -> None:
    event_type = routed_type(agents_core)
    script = messages_api_server.script(
        error(429, "rate limited", {"retry-after-ms": "300"}),
        message(text("handled")),
        match=event_type,
    )

    event_id = agents_core.publish(event_type, {}, "monitoring").event_id
    delivery = settled(agents_core, event_id, AGENT, "succeeded", "dead")

    assert delivery["status"] == "succeeded" and delivery["attempts"] == 2
    first, second = (request.at for request in script.requests)
    assert second - first >= 0.3


def test_overload_that_outlasts_the_retries_ends_in_the_dead_letter_queue(
    agents_core: Core, messages_api_server: MessagesAPI
) -> None:
    event_type = routed_type(agents_core)
    retries = agents_core.settings.max_retries
    script = messages_api_server.script(
        *(error(529, "Overloaded") for _ in range(retries + 1)), match=event_type
    )

    event_id = agents_core.publish(event_type, {}, "monitoring").event_id
    delivery = settled(agents_core, event_id, AGENT, "dead")

    assert len(script.requests) == retries + 1 and delivery["attempts"] == retries + 1
    (letter,) = agents_core.dead_letter_list(event_type=event_type)
    assert letter.error_class == "eda.errors.TransientError"
    assert "529 overloaded_error: Overloaded" in letter.error
    assert delivery["outcome"]["backend"] == "anthropic" and delivery["outcome"]["turns"] == 0


def test_a_bad_request_goes_to_the_dead_letter_queue_at_once_with_the_apis_message(
    agents_core: Core, messages_api_server: MessagesAPI
) -> None:
    event_type = routed_type(agents_core)
    script = messages_api_server.script(
        error(400, "messages.0.content: prompt is too long"), match=event_type
    )

    event_id = agents_core.publish(event_type, {}, "monitoring").event_id
    delivery = settled(agents_core, event_id, AGENT, "dead")

    assert delivery["attempts"] == 1 and len(script.requests) == 1
    (letter,) = agents_core.dead_letter_list(event_type=event_type)
    assert letter.error_class == "eda.errors.PermanentError"
    assert "prompt is too long" in letter.error


def test_the_shipped_alert_responder_runs_dry_through_the_session_worker(live: Core) -> None:
    assert not has_credentials(), "unset ANTHROPIC_API_KEY: this test must not reach the API"
    event_type = f"alert.t{uuid.uuid4().hex[:10]}_triggered"
    live.subscribe([event_type], "AlertResponder")

    low = live.publish(event_type, {"severity": "low"}, "monitoring").event_id
    high = live.publish(event_type, {"severity": "high", "service": "db"}, "monitoring").event_id
    skipped = settled(live, low, "AlertResponder", "skipped", "dead")
    done = settled(live, high, "AlertResponder", "succeeded", "dead")

    assert skipped["status"] == "skipped"
    assert skipped["history"][-1]["reason"].startswith("high_severity: condition severity in")
    assert done["status"] == "succeeded", done
    assert done["outcome"]["outcome"] == "dry_run" and done["outcome"]["backend"] == "dry_run"
    prompt = done["outcome"]["request"]["messages"][0]["content"][0]["text"]
    assert done["outcome"]["request"]["system"]  # shown whole: its template read back in
    stored = live.redis.hvals(live.keys.outcomes(high))
    assert stored and all('"system"' not in raw for raw in stored)  # but kept once, apart
    assert low in prompt  # the enricher read the history: the earlier alert is there


def test_a_429_with_retry_after_pauses_every_delivery_of_the_model(
    agents_core: Core, messages_api_server: MessagesAPI
) -> None:
    limited_type, other_type = routed_type(agents_core), routed_type(agents_core)
    limited = messages_api_server.script(
        error(429, "rate limited", {"retry-after": "3"}), message(text("one")), match=limited_type
    )
    other = messages_api_server.script(message(text("two")), match=other_type)

    first = agents_core.publish(limited_type, {}, "monitoring").event_id
    settled(agents_core, first, AGENT, "retrying", "waiting", "succeeded")
    second = agents_core.publish(other_type, {}, "monitoring").event_id
    done = [settled(agents_core, i, AGENT, "succeeded", "dead") for i in (first, second)]

    assert [d["status"] for d in done] == ["succeeded", "succeeded"]
    paused_at = limited.requests[0].at
    # Each waited the 3 s pause out, and no longer (a second and a half of slack for load):
    # its own retry, and a delivery that never got a 429.
    assert 2.9 <= limited.requests[1].at - paused_at < 4.5
    assert 2.9 <= other.requests[0].at - paused_at < 4.5
    reasons = [change["reason"] for change in done[1]["history"]]
    assert "model claude-haiku-5-5 asked every caller to wait" in reasons
