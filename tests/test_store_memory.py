"""What an event costs in Redis: its records stay in the compact hash encoding, and keep
nothing a reader knows without them."""

from __future__ import annotations

import json

import redis

from eda.delivery import Deliveries, Status
from eda.event import Event
from eda.redis_server import COMPACT_HASH_VALUE
from eda.settings import Settings
from eda.store import EventStore
from tests.lifecycle import finish, queue, requeue, start

#: Redis's names for its compact hash encoding (6.x, 7.x).
COMPACT = {"ziplist", "listpack"}


def test_a_delivered_event_with_a_1_kb_payload_stays_compact(
    settings: Settings, client: redis.Redis
) -> None:
    store = EventStore(client, settings)
    event = Event.create(type="thing.happened", source="test", payload={"pad": "x" * 1024})
    store.publish(event)
    steps, handler = Deliveries(store), "tests.handlers:succeed"
    queue(steps, event.id, handler, "f3a9c2d1e4b5a6978877665544332211")
    start(steps, event.id, handler, "f3a9c2d1e4b5a6978877665544332211", "celery@worker-1")
    finish(
        steps,
        event.id,
        handler,
        Status.SUCCEEDED,
        "attempt 1 succeeded",
        task="f3a9c2d1e4b5a6978877665544332211",
    )

    assert client.config_get("hash-max-ziplist-value") == {
        "hash-max-ziplist-value": str(COMPACT_HASH_VALUE)
    }
    assert client.object("encoding", store.keys.event(event.id)) in COMPACT
    assert client.object("encoding", store.keys.deliveries(event.id)) in COMPACT


#: A delivered event's records (event hash and deliveries hash, with their keys), beyond
#: its 1 KB payload, by ``MEMORY USAGE``: 1,041 B here; 1,263 B when the records kept what
#: a reader knows without it (the handler, false flags, counts of 0, each attempt's task
#: id and single start, and the event's derived status beside the same status).
RECORDS_OVER_PAYLOAD = 1100

TASK = "f3a9c2d1e4b5a6978877665544332211"


def deliver_once(store: EventStore, handler: str, payload: dict[str, object]) -> Event:
    """An event stored, then one delivery queued, started and succeeded, by the scripts."""
    event = Event.create(type="thing.happened", source="test", payload=payload)
    store.publish(event)
    steps = Deliveries(store)
    queue(steps, event.id, handler, TASK)
    start(steps, event.id, handler, TASK, "celery@worker-1")
    finish(steps, event.id, handler, Status.SUCCEEDED, "attempt 1 succeeded", task=TASK)
    return event


def test_a_delivered_event_s_records_keep_nothing_a_reader_knows_without_them(
    settings: Settings, client: redis.Redis
) -> None:
    store = EventStore(client, settings)
    handler = "tests.handlers:succeed"
    event = deliver_once(store, handler, {"pad": "x" * 1024})

    used = sum(
        int(client.memory_usage(key, samples=0) or 0)
        for key in (store.keys.event(event.id), store.keys.deliveries(event.id))
    )
    assert used - 1024 <= RECORDS_OVER_PAYLOAD
    raw = json.loads(client.hget(store.keys.deliveries(event.id), handler))
    (run,) = raw["runs"]
    (attempt,) = run["attempts"]
    assert "handler" not in raw and {"replay", "enqueue_failed", "dropped_runs"}.isdisjoint(raw)
    assert {"replay", "dropped_attempts", "count"}.isdisjoint(run)
    assert {"task_id", "starts"}.isdisjoint(attempt)
    assert all("after" not in note for note in run["notes"])
    assert "derived" not in client.hkeys(store.keys.event(event.id))

    # Read back, the record says all it said when it stored them.
    shown = store.get(event.id).deliveries[handler]
    assert (shown["handler"], shown["replay"], shown["enqueue_failed"]) == (handler, False, False)
    assert (shown["dropped_runs"], shown["attempts"], shown["totals"]["runs"]) == (0, 1, 1)
    (read_run,) = shown["runs"]
    assert (read_run["replay"], read_run["dropped_attempts"]) == (False, 0)
    assert [note["after"] for note in read_run["notes"]] == [0]
    (read_attempt,) = read_run["attempts"]
    assert (read_attempt["task_id"], read_attempt["starts"]) == (TASK, 1)


def test_an_attempt_keeps_its_task_id_once_a_replay_names_another_task(
    settings: Settings, client: redis.Redis
) -> None:
    store = EventStore(client, settings)
    handler = "tests.handlers:succeed"
    event = deliver_once(store, handler, {"n": 1})
    steps = Deliveries(store)
    again = "0123456789abcdef0123456789abcdef"
    requeue(steps, event.id, handler, again, replay=True)
    start(steps, event.id, handler, again, "celery@worker-2")
    start(steps, event.id, handler, again, "celery@worker-2")  # its worker died: in place
    finish(steps, event.id, handler, Status.SUCCEEDED, "attempt 1 succeeded", task=again)

    record = steps.get(event.id, handler)
    assert record is not None
    assert [(r.replay, [(a.task_id, a.starts) for a in r.attempts]) for r in record.runs] == [
        (False, [(TASK, 1)]),
        (True, [(again, 2)]),
    ]
    stored = json.loads(client.hget(store.keys.deliveries(event.id), handler))
    assert stored["runs"][0]["attempts"][0]["task_id"] == TASK
    assert "task_id" not in stored["runs"][1]["attempts"][0]


def test_an_event_marked_pending_after_its_deliveries_ran_gets_their_status_back(
    settings: Settings, client: redis.Redis
) -> None:
    store = EventStore(client, settings)
    event = deliver_once(store, "tests.handlers:succeed", {"n": 1})
    store.mark_undispatched(event.id, "the broker was away")
    assert client.hmget(store.keys.event(event.id), "status", "derived") == [
        "pending",
        "succeeded",
    ]
    store.mark_dispatched_many([(event.id, None)])
    assert client.hget(store.keys.event(event.id), "status") == "succeeded"
    assert "derived" not in client.hkeys(store.keys.event(event.id))
