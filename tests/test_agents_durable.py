"""Durable agent runs through real workers: a retry or a killed worker resumes the run from
its journal instead of repeating it, and a run stopped on a limit is not a success.

The module runs its own broker and workers, whose agents (tests/agents.yaml) talk to the
module's Messages API server; each test routes event types of its own to DurableResponder.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import tasks
from eda.core import Core
from eda.settings import load
from scripts.cli import main
from tasks.enqueue import CeleryEnqueuer
from tests.brokers import own_redis
from tests.conftest import settled, wait_for
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

pytestmark = pytest.mark.timeout(120)

AGENT = "DurableResponder"
#: The killed worker's message comes back after this long: long enough that the doomed
#: worker, slow to make its first delivery under load, never gets it back before it is
#: killed (a message unacknowledged past it is delivered again, to anyone).
SHORT_VISIBILITY = {
    "EDA_VISIBILITY_TIMEOUT": "5",
    "EDA_TASK_TIME_LIMIT": "4",
    "EDA_TASK_SOFT_TIME_LIMIT": "3.5",
}


@pytest.fixture(scope="module")
def broker_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis of the module's own for brokers (``<url>/<db>``): no other worker shares it."""
    with own_redis(tmp_path_factory.mktemp("durable-broker")) as url:
        yield url


@pytest.fixture(scope="module")
def worker_env(broker_server: str, messages_api_server: MessagesAPI) -> dict[str, str]:
    return {
        "EDA_PREFIX": f"durable-{uuid.uuid4().hex[:8]}",
        "CELERY_BROKER_URL": f"{broker_server}/0",
        "EDA_AGENTS": str(ROOT / "tests" / "agents.yaml"),
        "ANTHROPIC_BASE_URL": messages_api_server.url,
        "ANTHROPIC_API_KEY": TEST_API_KEY,
        # a chain that runs away is stopped after a few agent runs, not eight
        "EDA_MAX_CAUSATION_DEPTH": "3",
    }


@pytest.fixture(scope="module")
def durable_core(worker_env: dict[str, str]) -> Core:
    settings = load({**os.environ, **FAST, **worker_env})
    return Core(settings, enqueuer=CeleryEnqueuer(tasks.app, worker_env["CELERY_BROKER_URL"]))


@pytest.fixture(scope="module")
def worker(
    worker_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    running = Worker(tmp_path_factory.mktemp("durable-worker") / "worker.log", env=worker_env)
    yield running
    running.stop()


def delivery(core: Core, event_id: str, *statuses: str, timeout: float = 30) -> dict[str, Any]:
    """The agent's delivery once it reaches one of ``statuses``."""
    return settled(core, event_id, AGENT, *statuses, timeout=timeout)


def routed(core: Core) -> tuple[str, str]:
    """An event type of the test's own routed to the agent, and its follow-up type."""
    tag = f"t{uuid.uuid4().hex[:10]}"
    core.subscribe([f"{tag}.happened"], AGENT)
    return f"{tag}.happened", f"{tag}.followup"


def publish_call(event_type: str) -> dict[str, Any]:
    return tool_use("publish_event", {"event_type": event_type, "payload": '{"team": "db"}'})


def test_a_retry_after_a_tool_call_resumes_the_run_and_publishes_once(
    durable_core: Core, messages_api_server: MessagesAPI, worker: Worker
) -> None:
    event_type, followup = routed(durable_core)
    script = messages_api_server.script(
        message(publish_call(followup), input_tokens=1000, output_tokens=100),
        error(529, "Overloaded"),
        message(text("Notified the db team."), input_tokens=1200, output_tokens=50),
        match=event_type,
    )

    event_id = durable_core.publish(event_type, {"severity": "high"}, "monitoring").event_id
    record = delivery(durable_core, event_id, "succeeded", "dead", "stopped")

    assert record["status"] == "succeeded", record
    assert len(durable_core.history(followup)) == 1  # not once per attempt
    assert len(script.requests) == 3  # turns + 1 failed: no turn was asked for twice
    first, second = record["runs"][0]["attempts"]
    assert first["outcome"]["usage"]["input_tokens"] == 1000
    assert second["outcome"]["usage"]["input_tokens"] == 1200
    assert record["totals"]["turns"] == 2 == len(script.requests) - 1
    assert record["totals"]["input_tokens"] == 2200 and record["totals"]["tool_calls"] == 1
    resumed = script.requests[2].body["messages"]
    assert len(resumed) == 3 and resumed[2]["content"][0]["type"] == "tool_result"
    (published,) = durable_core.history(followup)
    assert published.event.source == AGENT and published.event.causation_id == event_id
    (run,) = durable_core.transcripts(event_id)[AGENT]
    assert [turn["attempt"] for turn in run["turns"]] == [1, 2]
    assert run["turns"][0]["tool_calls"][0]["name"] == "publish_event"
    assert run["totals"]["input_tokens"] == 2200 and run["sent"]["tools"] == [
        "publish_event",
        "get_event_history",
    ]
    shown = CliRunner().invoke(main, ["event", event_id], obj=durable_core, env={"COLUMNS": "250"})
    assert shown.exit_code == 0, shown.output
    assert f"{AGENT}, run 1" in shown.stdout and "Notified the db team." in shown.stdout


def test_a_worker_killed_after_a_tool_call_is_resumed_without_asking_the_first_turn_again(
    worker_env: dict[str, str],
    broker_server: str,
    messages_api_server: MessagesAPI,
    tmp_path: Path,
) -> None:
    env = {**worker_env, "CELERY_BROKER_URL": f"{broker_server}/1", **SHORT_VISIBILITY}
    core = Core(
        load({**os.environ, **FAST, **env}),
        enqueuer=CeleryEnqueuer(tasks.app, env["CELERY_BROKER_URL"]),
    )
    event_type, followup = routed(core)
    script = messages_api_server.script(
        message(publish_call(followup)),
        message(text("never read: its worker is dead"), delay=20),
        message(text("Notified the db team.")),
        match=event_type,
    )
    doomed = Worker(tmp_path / "doomed.log", env, name="doomed")
    try:
        event_id = core.publish(event_type, {"severity": "high"}, "monitoring").event_id
        wait_for(lambda: len(script.requests) == 2 and core.history(followup), timeout=30)
    finally:
        doomed.kill()
    rescuer = Worker(tmp_path / "rescuer.log", env, name="rescuer")
    try:
        # the message comes back once its visibility timeout passed and a worker restores it
        record = delivery(core, event_id, "succeeded", "dead", "stopped", timeout=60)
    finally:
        rescuer.stop()

    assert record["status"] == "succeeded", record
    assert len(core.history(followup)) == 1
    first_turns = [r for r in script.requests if len(r.body["messages"]) == 1]
    assert len(first_turns) == 1  # the model was not asked the first turn again
    (attempt,) = record["runs"][0]["attempts"]
    assert attempt["starts"] == 2  # the same attempt, restarted in place
    assert attempt["outcome"]["turns"] == 2 and len(attempt["outcome"]["tool_calls"]) == 1


def test_a_run_stopped_by_its_turn_limit_is_stopped_not_retried_and_counted_apart(
    durable_core: Core, messages_api_server: MessagesAPI, worker: Worker
) -> None:
    event_type, _ = routed(durable_core)
    lookups = (tool_use("get_event_history", {"event_type": event_type}) for _ in range(6))
    script = messages_api_server.script(*(message(call) for call in lookups), match=event_type)

    event_id = durable_core.publish(event_type, {}, "monitoring").event_id
    record = delivery(durable_core, event_id, "succeeded", "dead", "stopped")

    assert record["status"] == "stopped", record
    assert record["attempts"] == 1 and len(script.requests) == 4  # max_turns, no retry
    assert record["outcome"]["outcome"] == "max_turns"
    assert record["history"][-1]["reason"] == "the agent stopped: max_turns"
    assert durable_core.get_event(event_id).status == "stopped"
    assert durable_core.stats()["statuses"].get("stopped", 0) >= 1
    assert not durable_core.dead_letter_list(event_type=event_type)


def test_a_type_outside_the_agents_publishes_list_is_refused_and_counted(
    durable_core: Core, messages_api_server: MessagesAPI, worker: Worker
) -> None:
    event_type, _ = routed(durable_core)
    outside = f"{event_type.split('.')[0]}.escalated"
    script = messages_api_server.script(
        message(publish_call(outside)), message(text("Could not escalate.")), match=event_type
    )

    event_id = durable_core.publish(event_type, {}, "monitoring").event_id
    record = delivery(durable_core, event_id, "succeeded", "dead", "stopped")

    (call,) = record["outcome"]["tool_calls"]
    assert call["refused"] and "may not publish" in call["result"]
    assert record["totals"]["refused_tool_calls"] == 1
    assert not durable_core.history(outside) and len(script.requests) == 2
    assert "tool call refused" in worker.log()


def test_an_agent_republishing_its_trigger_through_a_worker_stops_at_the_depth_limit(
    durable_core: Core, messages_api_server: MessagesAPI, worker: Worker
) -> None:
    event_type = f"t{uuid.uuid4().hex[:10]}.followup"  # a type the agent may publish
    durable_core.subscribe([event_type], AGENT)
    limit = durable_core.settings.max_causation_depth
    generation = (message(publish_call(event_type)), message(text("Raised it again.")))
    script = messages_api_server.script(*generation * (limit + 1), match=event_type)

    durable_core.publish(event_type, {"severity": "high"}, "monitoring")
    wait_for(lambda: any(s.status == "blocked" for s in durable_core.history(event_type)), 60)

    chain = sorted(durable_core.history(event_type), key=lambda s: s.depth)
    assert [s.depth for s in chain] == list(range(limit + 2))
    for cause, caused in pairwise(chain):
        assert caused.event.causation_id == cause.event.id
    for dispatched in chain[:-1]:
        assert (
            delivery(durable_core, dispatched.event.id, "succeeded", "dead", "stopped")["status"]
            == "succeeded"
        )
    over = durable_core.get_event(chain[-1].event.id)
    assert over.status == "blocked" and not over.deliveries
    assert f"causation depth {limit + 1} is over the limit of {limit}" in (over.blocked or "")
    assert over.event.id not in durable_core.store.pending(older_than=0)
    assert script.remaining == 0 and len(script.requests) == 2 * (limit + 1)
