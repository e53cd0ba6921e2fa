"""Dead-letter triage: DeadLetterTriager, as shipped in agents/agents.yaml, through a real
worker whose model is the module's local Messages API server.

Five dead letters (two whose transient cause has passed, three of bad input): the
scripted model retries the two (a third retry is refused by the run's limit), annotates
the three, and publishes one summary.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from agents import load_definitions
from agents.context import DeliveryContext
from agents.triage import annotate_dead_letter, retry_dead_letter
from eda.core import Core
from eda.event import DeliveryInfo
from eda.triage import REQUESTED, request_triage
from tests.conftest import RedisServer, wait_for
from tests.messages_api import (
    MessagesAPI,
    message,
    messages_api_server,
    text,
    tool_use,
)
from tests.test_agents_worker import settled
from tests.workers import ROOT, core_with_worker, module_env

__all__ = ["messages_api_server"]  # a fixture used below

pytestmark = pytest.mark.timeout(90)

TRIAGER = "DeadLetterTriager"
ROUTES = """routes:
  - events: [dlq.triage_requested]
    handler: DeadLetterTriager
  - events: [dlq.triaged]
    handler: tasks.builtin:log_event
  - events: ["triagefix.*"]
    handler: tests.handlers:fixable
    retry: {max_retries: 0}
  - events: ["triagebad.*"]
    handler: tests.handlers:fail
"""


@pytest.fixture(scope="module")
def triage_core(
    redis_server: RedisServer,
    messages_api_server: MessagesAPI,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Core]:
    routes = tmp_path_factory.mktemp("triage-routes") / "routes.yaml"
    routes.write_text(ROUTES)
    env = module_env(
        "triage",
        redis_server.url,
        12,
        routes,
        messages_api_server.url,
        EDA_TRIAGE="1",
        EDA_TRIAGE_MAX_RETRIES="2",
    )
    with core_with_worker(env, tmp_path_factory.mktemp("triage-worker")) as core:
        yield core


def dead_letters(core: Core, client: redis.Redis) -> tuple[list[str], list[str]]:
    """Two letters of a transient failure (its cause then fixed) and three of bad input."""
    tag = uuid.uuid4().hex[:8]
    storing = Core(core.settings, client)  # stores without dispatching: the fault comes first
    fixable = [storing.publish(f"triagefix.{tag}", {"n": n}, "shop").event_id for n in (1, 2)]
    for event_id in fixable:
        client.set(f"test-broken:{event_id}", "1")
    bad = [storing.publish(f"triagebad.{tag}", {"n": n}, "shop").event_id for n in (3, 4, 5)]
    for event_id in fixable + bad:
        core.dispatch(core.get_event(event_id).event)
    wait_for(lambda: core.dead_letters.count() >= 5, timeout=30)
    for event_id in fixable:
        client.delete(f"test-broken:{event_id}")  # the outage has passed
    return [f"{e}:tests.handlers:fixable" for e in fixable], [
        f"{e}:tests.handlers:fail" for e in bad
    ]


def test_the_triager_retries_the_transient_letters_annotates_the_rest_and_summarises(
    triage_core: Core, messages_api_server: MessagesAPI, client: redis.Redis
) -> None:
    transient, bad = dead_letters(triage_core, client)
    summary = {
        "retried": transient,
        "annotated": dict.fromkeys(bad, "bad_input"),
        "summary": "Two timeouts have passed and were retried; three bad events.",
    }
    retries = [
        tool_use("retry_dead_letter", {"dead_letter_id": x, "reason": "the outage has passed"})
        for x in [*transient, bad[0]]
    ]
    notes = [
        tool_use(
            "annotate_dead_letter",
            {
                "dead_letter_id": x,
                "category": "bad_input",
                "reason": "the event lacks its order id",
            },
        )
        for x in bad
    ]
    script = messages_api_server.script(
        message(tool_use("get_dead_letters", {"limit": 50})),
        message(*retries, *notes),
        message(
            tool_use("publish_event", {"event_type": "dlq.triaged", "payload": json.dumps(summary)})
        ),
        message(text("Retried two letters, annotated three.")),
        match=REQUESTED,
    )

    published = request_triage(triage_core, "schedule")
    assert published is not None
    delivery = settled(triage_core, published.event_id, TRIAGER, "succeeded", "dead", "stopped")

    assert delivery["status"] == "succeeded", delivery
    assert script.remaining == 0
    asked = script.requests[0].body["messages"][0]["content"][0]["text"]
    assert REQUESTED in asked and "dead_letters" in asked and "max_retries" in asked
    letters_seen = script.requests[1].body["messages"][-1]["content"][0]["content"]
    assert all(letter in letters_seen for letter in transient + bad)
    for letter_id in transient:  # retried: gone from the queue, and the delivery succeeded
        event_id = letter_id.split(":")[0]
        assert settled(triage_core, event_id, "tests.handlers:fixable", "succeeded")
    remaining = {letter.id: letter for letter in triage_core.dead_letter_list()}
    assert set(remaining) == set(bad)
    for letter in remaining.values():
        assert letter.annotation is not None
        assert letter.annotation["by"] == TRIAGER and letter.annotation["category"] == "bad_input"
    calls = delivery["outcome"]["tool_calls"]
    refused = [c for c in calls if c["input"].get("dead_letter_id") == bad[0] and c["is_error"]]
    assert len(refused) == 1 and "already retried 2 letters" in refused[0]["result"]
    (triaged,) = triage_core.history(event_type="dlq.triaged")
    assert triaged.event.source == TRIAGER and triaged.event.causation_id == published.event_id
    assert triaged.event.payload["retried"] == transient


def test_triage_is_asked_once_an_interval_and_not_at_all_when_off(
    triage_core: Core, make_settings: Any, client: redis.Redis
) -> None:
    core = Core(
        triage_core.settings.model_copy(update={"prefix": f"tq-{uuid.uuid4().hex[:6]}"}), client
    )
    assert request_triage(core, "schedule") is None  # no letters, nothing to do
    client.zadd(core.keys.dlq, {"x:y": 1})
    client.set(core.keys.dead_letter("x:y"), "{}")
    first = request_triage(core, "schedule")
    again = request_triage(core, "schedule")
    assert first is not None and again is not None and again.duplicate
    assert again.event_id == first.event_id
    assert request_triage(core, "pile-up") is None  # no threshold set
    off = Core(core.settings.model_copy(update={"triage": False}), client)
    assert request_triage(off, "schedule") is None


def test_letters_piling_up_to_the_threshold_ask_for_triage_before_its_time(
    make_settings: Any, client: redis.Redis
) -> None:
    core = Core(make_settings(triage=True, triage_threshold=2), client)
    client.zadd(core.keys.dlq, {"x:y": 1})
    client.set(core.keys.dead_letter("x:y"), "{}")
    assert request_triage(core, "pile-up") is None  # one letter, below the threshold of two

    at_threshold = Core(core.settings.model_copy(update={"triage_threshold": 1}), client)
    published = request_triage(at_threshold, "pile-up")

    assert published is not None and not published.duplicate
    (requested,) = core.history(event_type=REQUESTED)
    assert requested.event.id == published.event_id and requested.event.source == "beat"
    assert requested.event.payload["cause"] == "pile-up"
    assert requested.event.payload["dead_letters"] == 1
    assert request_triage(core, "schedule") is not None  # its own cause, its own request


def test_a_dry_run_records_what_it_would_do_and_changes_nothing(
    make_settings: Any, client: redis.Redis
) -> None:
    settings = make_settings(triage_dry_run=True, triage=True)
    core = Core(settings, client)
    event = core.get_event(core.publish("triagebad.dry", {}, "shop").event_id).event
    context = DeliveryContext(event.delivered(DeliveryInfo("d", TRIAGER, 1, 1, "t")), settings)
    arguments = {"dead_letter_id": "e:h", "reason": "passed"}
    assert retry_dead_letter.function(arguments, context) == {
        "dry_run": True,
        "would_retry": "e:h",
        "reason": "passed",
    }
    noted = annotate_dead_letter.function({**arguments, "category": "bad_input"}, context)
    assert noted["dry_run"] is True and noted["would_annotate"] == "e:h"


def test_beat_schedules_triage_only_when_it_is_on(tmp_path: Path) -> None:
    def schedule(**variables: str) -> dict[str, Any]:
        program = "import json, celeryconfig; print(json.dumps(celeryconfig.beat_schedule))"
        env = {**os.environ, **variables}
        out = subprocess.run(
            [sys.executable, "-c", program],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        return dict(json.loads(out.stdout))

    assert "triage-dead-letters" not in schedule()
    on = schedule(EDA_TRIAGE="1", EDA_TRIAGE_INTERVAL="600", EDA_TRIAGE_THRESHOLD="20")
    assert on["triage-dead-letters"] == {
        "task": "eda.triage",
        "schedule": 600.0,
        "args": ["schedule"],
    }
    assert on["triage-pile-up"]["args"] == ["pile-up"]


def test_the_shipped_triager_may_publish_only_its_summary(make_settings: Any) -> None:
    spec = load_definitions(make_settings())[TRIAGER]
    assert spec.publishes == ("dlq.triaged",)
