"""The delivery's lifecycle in the store: legal steps only, attempts and runs kept, bounded."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from eda.delivery import ALL, NEW, STEPS, Change, Deliveries, Status, legal
from eda.errors import InvalidInput, NotFound
from eda.event import Event
from eda.keys import Keys
from eda.settings import Settings
from eda.store import EventStore
from tests.conftest import RedisServer
from tests.lifecycle import finish, kill, letter_for, queue, requeue, start
from tests.test_store import CountingConnection


@pytest.fixture
def store(settings: Settings, client: redis.Redis) -> EventStore:
    return EventStore(client, settings)


@pytest.fixture
def steps(store: EventStore) -> Deliveries:
    return Deliveries(store)


def published(store: EventStore, **payload: Any) -> Event:
    event = Event.create(type="alert.triggered", source="test", payload=payload)
    store.publish(event)
    return event


def record(store: EventStore, event_id: str, handler: str = "h") -> dict[str, Any]:
    return store.get(event_id).deliveries[handler]


def test_each_step_is_recorded_with_its_time_reason_attempt_and_worker(
    store: EventStore, steps: Deliveries
) -> None:
    sent = published(store)
    assert queue(steps, sent.id, "h").previous == NEW
    assert start(steps, sent.id, "h", worker="worker-a").extra[1:3] == (1, 1)
    applied = finish(
        steps, sent.id, "h", Status.SUCCEEDED, "attempt 1 succeeded", outcome={"ok": 1}
    )
    assert (applied.previous, applied.event_status, applied.ok) == ("running", "succeeded", True)

    delivery = record(store, sent.id)
    assert (delivery["status"], delivery["task_id"], delivery["attempts"]) == ("succeeded", "t1", 1)
    assert [(h["status"], h["reason"]) for h in delivery["history"]] == [
        ("queued", "dispatched"),
        ("running", "attempt 1"),
        ("succeeded", "attempt 1 succeeded"),
    ]
    for change in delivery["history"]:
        assert datetime.fromisoformat(change["at"]).tzinfo is not None
    (run,) = delivery["runs"]
    (attempt,) = run["attempts"]
    assert (attempt["number"], attempt["task_id"], attempt["worker"]) == (1, "t1", "worker-a")
    assert attempt["status"] == "succeeded" and attempt["ended_at"] >= attempt["started_at"]
    assert attempt["outcome"] == {"ok": 1} == delivery["outcome"]
    assert isinstance(run["notes"], list) and isinstance(run["attempts"], list)
    assert steps.get(sent.id, "nobody") is None


@pytest.mark.parametrize(
    ("step", "source"),
    [
        (step, source)
        for step, rule in STEPS.items()
        for source in ALL
        if source not in rule.sources
    ],
)
def test_every_illegal_step_is_refused_and_changes_nothing(
    store: EventStore, steps: Deliveries, step: str, source: str
) -> None:
    sent = published(store)
    _bring_to(steps, sent, source)
    before = store.get(sent.id).deliveries.get("h")
    target = STEPS[step].targets[0]
    applied = steps.apply(
        Change(sent.id, "h", step, target, "not allowed", task_id="t1", options={"attempt": 1})
    )
    assert (applied.previous, applied.result) == (source, "refused")
    assert store.get(sent.id).deliveries.get("h") == before
    assert not legal(step, source, target)


def _bring_to(steps: Deliveries, event: Event, status: str) -> None:
    """Walk a delivery to ``status`` through legal steps (task t1, attempt 1)."""
    if status == NEW:
        return
    if status == Status.SKIPPED:
        steps.apply(Change(event.id, "h", "plan_skip", Status.SKIPPED, "condition false"))
        return
    queue(steps, event.id, "h")
    if status == Status.QUEUED:
        return
    if status == Status.WAITING:
        steps.apply(Change(event.id, "h", "wait", Status.WAITING, "a slot", task_id="t1"))
        return
    start(steps, event.id, "h")
    if status != Status.RUNNING:
        finish(steps, event.id, "h", Status(status), "ended", letter=None)


def test_a_step_to_a_status_it_cannot_lead_to_is_invalid_input(
    store: EventStore, steps: Deliveries
) -> None:
    sent = published(store)
    with pytest.raises(InvalidInput) as caught:
        steps.apply(Change(sent.id, "h", "start", Status.SUCCEEDED))
    assert caught.value.field == "status"
    with pytest.raises(NotFound):
        queue(steps, "no-such-event", "h")


def test_the_event_status_is_derived_from_all_of_its_deliveries(
    store: EventStore, steps: Deliveries
) -> None:
    sent = published(store)
    assert queue(steps, sent.id, "a").event_status == "queued"
    assert queue(steps, sent.id, "b").event_status == "queued"
    assert start(steps, sent.id, "a").event_status == "processing"
    assert finish(steps, sent.id, "a", Status.RETRYING, "flaky").event_status == "processing"
    assert start(steps, sent.id, "a").event_status == "processing"
    assert finish(steps, sent.id, "a", Status.SUCCEEDED, attempt=2).event_status == "queued"
    assert start(steps, sent.id, "b").event_status == "processing"
    assert finish(steps, sent.id, "b", Status.DEAD, "bad").event_status == "failed"
    assert store.get(sent.id).status == "failed"


def test_an_event_whose_every_delivery_was_skipped_is_skipped(
    store: EventStore, steps: Deliveries
) -> None:
    sent = published(store)
    steps.apply(Change(sent.id, "a", "plan_skip", Status.SKIPPED, "condition severity in [high]"))
    assert store.get(sent.id).status == "skipped"


def test_a_message_that_comes_back_restarts_its_attempt_and_spends_no_retry(
    store: EventStore, steps: Deliveries
) -> None:
    sent = published(store)
    queue(steps, sent.id, "h", enqueue_failed=True)
    assert start(steps, sent.id, "h", worker="w1").extra[1:3] == (1, 1)
    assert record(store, sent.id)["enqueue_failed"] is False  # it evidently reached the broker
    assert start(steps, sent.id, "h", worker="w2").extra[1:3] == (1, 2)  # its worker died
    assert start(steps, sent.id, "h", task="another").result == "superseded"
    finish(steps, sent.id, "h", Status.RETRYING, "flaky")
    assert start(steps, sent.id, "h").extra[1:3] == (2, 1)
    assert finish(steps, sent.id, "h", Status.SUCCEEDED, attempt=1).result == "superseded"
    finish(steps, sent.id, "h", Status.SUCCEEDED, attempt=2)
    assert start(steps, sent.id, "h").result == "refused"  # a redelivery after success
    attempts = record(store, sent.id)["runs"][0]["attempts"]
    assert [(a["number"], a["starts"], a["worker"], a["status"]) for a in attempts] == [
        (1, 2, "w2", "retrying"),
        (2, 1, "w1", "succeeded"),
    ]


def test_a_dead_letter_is_written_in_the_same_step_as_the_dead_status(
    store: EventStore, steps: Deliveries, client: redis.Redis, prefix: str
) -> None:
    sent = published(store)
    queue(steps, sent.id, "h")
    start(steps, sent.id, "h")
    letter = letter_for(sent, "h", "boom", "t1")
    refused = finish(steps, sent.id, "h", Status.DEAD, "boom", task="t2", letter=letter)
    assert refused.result == "superseded"
    assert not client.exists(Keys(prefix).dead_letter(letter.id))  # nothing half done

    finish(steps, sent.id, "h", Status.DEAD, "boom", letter=letter)
    assert client.zscore(Keys(prefix).dlq, letter.id) is not None
    assert record(store, sent.id)["status"] == "dead"


def test_a_replay_adds_a_run_and_totals_add_up_over_every_attempt(
    store: EventStore, steps: Deliveries
) -> None:
    sent = published(store)
    usage = {"input_tokens": 100, "output_tokens": 10}
    queue(steps, sent.id, "h")
    start(steps, sent.id, "h")
    finish(steps, sent.id, "h", Status.RETRYING, "529", outcome={"usage": usage, "turns": 1})
    start(steps, sent.id, "h")
    finish(steps, sent.id, "h", Status.SUCCEEDED, attempt=2, outcome={"usage": usage, "turns": 2})
    requeue(steps, sent.id, "h", "t2")
    start(steps, sent.id, "h", task="t2")
    finish(steps, sent.id, "h", Status.SUCCEEDED, task="t2", outcome={"usage": usage, "turns": 1})

    delivery = record(store, sent.id)
    assert [(r["number"], r["reason"], len(r["attempts"])) for r in delivery["runs"]] == [
        (1, "dispatched", 2),
        (2, "replayed", 1),
    ]
    assert delivery["totals"] == {
        "runs": 2,
        "attempts": 3,
        "input_tokens": 300,
        "output_tokens": 30,
        "turns": 4,
        "tool_calls": 0,
    }
    assert delivery["attempts"] == 1  # of the current run


def test_attempts_and_runs_kept_are_capped_oldest_first_and_counted(
    make_settings: Any, client: redis.Redis, prefix: str
) -> None:
    store = EventStore(client, make_settings(max_attempts_kept=2, max_runs_kept=2))
    steps = Deliveries(store)
    sent = published(store)
    queue(steps, sent.id, "h")
    for number in range(1, 5):
        start(steps, sent.id, "h")
        finish(
            steps,
            sent.id,
            "h",
            Status.RETRYING,
            f"try {number}",
            attempt=number,
            outcome={"n": number},
        )
    delivery = record(store, sent.id)
    run = delivery["runs"][0]
    assert [a["number"] for a in run["attempts"]] == [3, 4]
    assert (run["dropped_attempts"], delivery["attempts"], delivery["totals"]["attempts"]) == (
        2,
        4,
        4,
    )
    outcomes = client.hkeys(Keys(prefix).outcomes(sent.id))
    assert sorted(outcomes) == ["h#1.3", "h#1.4"]  # the dropped attempts' outcomes went too

    for task in ("t2", "t3"):
        requeue(steps, sent.id, "h", task)
    delivery = record(store, sent.id)
    assert [r["number"] for r in delivery["runs"]] == [2, 3]
    assert delivery["dropped_runs"] == 1
    assert client.hkeys(Keys(prefix).outcomes(sent.id)) == []


def test_a_long_reason_is_cut(store: EventStore, steps: Deliveries) -> None:
    sent = published(store)
    queue(steps, sent.id, "h")
    start(steps, sent.id, "h")
    finish(steps, sent.id, "h", Status.RETRYING, "r" * 2000)
    assert len(record(store, sent.id)["history"][-1]["reason"]) == 500


def test_an_outcome_that_is_not_json_says_so_and_never_outlives_its_event(
    store: EventStore, steps: Deliveries, client: redis.Redis, prefix: str
) -> None:
    sent = published(store)
    queue(steps, sent.id, "h")
    start(steps, sent.id, "h")
    finish(steps, sent.id, "h", Status.SUCCEEDED, outcome={"when": datetime(2026, 1, 1)})
    assert record(store, sent.id)["outcome"] == {"when": "2026-01-01 00:00:00"}
    with pytest.raises(NotFound):
        finish(steps, "no-such-event", "h", Status.SUCCEEDED, outcome={"text": "lost"})
    assert not client.exists(Keys(prefix).outcomes("no-such-event"))


def test_many_steps_go_in_one_pipeline_and_a_missing_event_only_fails_its_own(
    redis_server: RedisServer, settings: Settings
) -> None:
    client = redis.Redis.from_url(
        redis_server.url, decode_responses=True, connection_class=CountingConnection
    )
    store = EventStore(client, settings)
    steps = Deliveries(store)
    first, second = published(store), published(store)
    queue(steps, first.id, "warm-up")  # the script is loaded
    sent = CountingConnection.sent
    results = steps.apply_many(
        [
            Change(
                first.id,
                "h",
                "dispatch",
                Status.QUEUED,
                "sent",
                task_id="a",
                options={"only_unsent": True},
            ),
            Change("no-such-event", "h", "dispatch", Status.QUEUED),
            Change(second.id, "h", "plan_skip", Status.SKIPPED, "condition false"),
            Change(
                first.id,
                "h",
                "dispatch",
                Status.QUEUED,
                "again",
                task_id="b",
                options={"only_unsent": True},
            ),
        ]
    )
    assert CountingConnection.sent - sent == 1  # no SCRIPT EXISTS before it
    assert not isinstance(results[0], Exception) and results[0].ok
    assert isinstance(results[1], NotFound)
    assert not isinstance(results[2], Exception) and results[2].event_status == "skipped"
    assert not isinstance(results[3], Exception) and results[3].result == "refused"
    assert record(store, first.id)["task_id"] == "a"


def test_pipelined_steps_a_server_lost_are_loaded_and_each_runs_once(
    tmp_path: Path, make_settings: Any
) -> None:
    server = RedisServer(tmp_path)
    server.start()
    try:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        store = EventStore(client, make_settings(redis_url=server.url))
        steps = Deliveries(store)
        events = [published(store) for _ in range(3)]
        client.script_flush()  # as after a restart without persistence of scripts
        results = steps.apply_many(
            [Change(e.id, "h", "dispatch", Status.QUEUED, "sent", task_id="t") for e in events]
        )
        assert [r.ok for r in results if not isinstance(r, Exception)] == [True] * 3
        for e in events:
            assert [h["status"] for h in record(store, e.id)["history"]] == ["queued"]
        client.close()
    finally:
        server.stop()


def test_an_unsent_mark_leaves_a_delivery_a_worker_started_alone(
    store: EventStore, steps: Deliveries
) -> None:
    sent = published(store)
    queue(steps, sent.id, "h")
    start(steps, sent.id, "h")
    late = steps.apply(
        Change(
            sent.id,
            "h",
            "unsent",
            Status.QUEUED,
            "enqueue failed",
            task_id="t1",
            options={"enqueue_failed": True},
        )
    )
    assert (late.previous, late.result) == ("running", "refused")
    assert record(store, sent.id)["enqueue_failed"] is False


def test_a_discard_is_noted_on_the_dead_delivery(store: EventStore, steps: Deliveries) -> None:
    sent = published(store)
    kill(steps, sent, "h")
    steps.apply(Change(sent.id, "h", "discard", Status.DEAD, "discarded: known bad"))
    assert record(store, sent.id)["history"][-1]["reason"] == "discarded: known bad"
