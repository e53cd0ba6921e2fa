"""The Gantz scripts that need a broker, as subprocesses against the real store and worker."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from eda.core import Core
from eda.redis_server import free_port
from eda.settings import Settings
from tests.conftest import wait_for
from tests.handlers import attempts
from tests.test_scripts_foundation import ROOT, Outcome
from tests.workers import FAST


@pytest.fixture
def script(live_settings: Settings, worker: Any) -> Any:
    """Run ``scripts/<name>`` with the session worker's Redis, prefix and broker."""
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),  # the test handlers live in tests/
        "REDIS_URL": str(live_settings.redis_url),
        "EDA_PREFIX": live_settings.prefix,
        "CELERY_BROKER_URL": os.environ["CELERY_BROKER_URL"],
        "EDA_DATA_DIR": os.environ["EDA_DATA_DIR"],
        **FAST,
    }

    def run(
        name: str, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
    ) -> Outcome:
        result = subprocess.run(
            [sys.executable, f"scripts/{name}", *args],
            cwd=ROOT,
            env={**environment, **(env or {})},
            input=stdin,
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL if stdin is None else None,
        )
        return Outcome(result.returncode, result.stdout, result.stderr)

    return run


def test_subscribe_publish_then_the_worker_delivers(
    script: Any, live: Core, client: Any, unique_type: Any
) -> None:
    event_type = unique_type()
    created = script("subscribe.py", f"{event_type}, {event_type}_other", "tests.handlers:succeed")
    assert [s["pattern"] for s in created.answer] == [event_type, f"{event_type}_other"]

    published = script("publish_event.py", event_type, "script-test", stdin='{"n": 1}').answer

    wait_for(lambda: live.get_event(published["id"]).status == "succeeded")
    assert len(attempts(client, published["id"], "succeed")) == 1


def test_subscribe_refuses_an_unknown_handler_and_a_bad_pattern(script: Any) -> None:
    unknown = script("subscribe.py", "billing.paid", "NoSuchAgent").error(2)
    assert unknown["field"] == "handler_id" and "NoSuchAgent" in unknown["message"]
    pattern = script("subscribe.py", "Billing", "tests.handlers:succeed").error(2)
    assert pattern["field"] == "event_types"
    assert script("subscribe.py", "{{event_types}}", "x").error(2)["field"] == "event_types"


def test_get_dlq_lists_dead_letters_and_retry_event_retries_them(
    script: Any, live: Core, client: Any, unique_type: Any
) -> None:
    event_type = unique_type()
    live.subscribe([event_type], "tests.handlers:fail")
    event_id = live.publish(event_type, {}, "test").event_id
    wait_for(lambda: live.get_event(event_id).status == "failed")

    answer = script("get_dlq.py", "{{limit}}", event_type).answer
    letters = answer["dead_letters"]
    assert [(x["event_id"], x["handler"]) for x in letters] == [(event_id, "tests.handlers:fail")]
    assert (letters[0]["error_class"], answer["more"]) == ("eda.errors.PermanentError", 0)
    assert script("get_dlq.py", "0").error(2)["field"] == "limit"

    retried = script("retry_event.py", event_id).answer
    assert [r["handler"] for r in retried["retried"]] == ["tests.handlers:fail"]
    wait_for(lambda: len(attempts(client, event_id, "fail")) == 2)
    wait_for(lambda: live.get_event(event_id).status == "failed")
    assert script("retry_event.py", "no-such-event").error(3)["field"] == "event_id"


def test_retry_event_without_failed_deliveries_says_so(
    script: Any, live: Core, unique_type: Any
) -> None:
    event_id = live.publish(unique_type(), {}, "test").event_id
    error = script("retry_event.py", event_id).error(2)
    assert "no failed deliveries" in error["message"]


def test_replay_events_dry_run_then_replay(
    script: Any, live: Core, client: Any, unique_type: Any
) -> None:
    event_type = unique_type()
    live.subscribe([event_type], "tests.handlers:succeed")
    ids = [live.publish(event_type, {"n": n}, "test").event_id for n in range(3)]
    wait_for(lambda: all(live.get_event(e).status == "succeeded" for e in ids))

    dry = script("replay_events.py", event_type, "1h", "{{until}}", "", "true").answer
    assert dry["dry_run"] is True and dry["events"] == 3
    assert {item["event_id"] for item in dry["items"]} == set(ids)

    done = script("replay_events.py", event_type, "1h", "", "2").answer
    assert done["dry_run"] is False and done["events"] == 2 and done["deliveries"] == 2
    wait_for(lambda: sum(len(attempts(client, e, "succeed")) for e in ids) == 5)
    assert script("replay_events.py", event_type, "", "", "", "maybe").error(2)["field"] == (
        "dry_run"
    )


def test_a_broker_that_refuses_gives_one_json_error_line_not_a_traceback(
    script: Any, live: Core, unique_type: Any
) -> None:
    event_type = unique_type()
    live.subscribe([event_type], "tests.handlers:fail")
    event_id = live.publish(event_type, {}, "test").event_id
    wait_for(lambda: live.get_event(event_id).status == "failed")

    down = f"redis://127.0.0.1:{free_port()}/0"
    outcome = script("retry_event.py", event_id, env={"CELERY_BROKER_URL": down})

    error = outcome.error(1)
    assert error["error"] == "internal" and "Traceback" not in outcome.stderr
    assert live.get_event(event_id).deliveries["tests.handlers:fail"]["status"] == "dead"


def test_publish_with_an_idempotency_key_publishes_once_however_often_it_runs(
    script: Any, live: Core, unique_type: Any
) -> None:
    event_type = unique_type()
    key = {"EDA_IDEMPOTENCY_KEY": f"{'e' * 32}:Agent:1:toolu_{event_type}"}

    first = script("publish_event.py", event_type, stdin='{"n": 1}', env=key).answer
    again = script("publish_event.py", event_type, stdin='{"n": 1}', env=key).answer
    other = script("publish_event.py", event_type, stdin='{"n": 1}').answer

    assert first["id"] == again["id"] != other["id"]
    assert len(live.history(event_type)) == 2
