"""tasks.consumer: a worker's task events reach monitors in batches, and every one arrives."""

from __future__ import annotations

import base64
import json
import os
import time
from collections import defaultdict
from typing import Any

import redis

from eda.core import Core
from eda.event import Event
from tasks import app
from tasks.consumer import EVENT_BUFFER_LIMIT, EVENT_FLUSH_INTERVAL, Consumer
from tests.conftest import settled

#: What a worker itself says of each task it runs.
WORKER_SIDE = {"task-received", "task-started", "task-succeeded"}


def events_in(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The task events one pub/sub message of the broker carries (one, or a batch)."""
    body = json.loads(base64.b64decode(json.loads(message["data"])["body"]))
    return body if isinstance(body, list) else [body]


def test_the_workers_task_events_leave_together_and_none_is_dropped(
    live: Core, unique_type: Any
) -> None:
    assert app.conf.worker_consumer == "tasks.consumer:Consumer"
    broker = redis.Redis.from_url(os.environ["CELERY_BROKER_URL"])
    monitor = broker.pubsub()
    monitor.psubscribe("*celeryev*")
    monitor.get_message(timeout=1)
    kind = unique_type()
    live.subscribe([kind], "tests.handlers:succeed")
    events = [Event.create(type=kind, source="test", payload={"n": n}) for n in range(12)]
    for event in events:
        live.store.publish(event)

    live.dispatch_many(events)

    task_ids = {
        settled(live, e.id, "tests.handlers:succeed", "succeeded")["task_id"] for e in events
    }
    seen: dict[str, set[str]] = defaultdict(set)
    carriers = 0
    deadline = time.monotonic() + 10 * EVENT_FLUSH_INTERVAL + 1
    while time.monotonic() < deadline and any(seen[t] != WORKER_SIDE for t in task_ids):
        message = monitor.get_message(timeout=0.1)
        if not message or message["type"] != "pmessage":
            continue
        ours = [
            e for e in events_in(message) if e.get("uuid") in task_ids and e["type"] in WORKER_SIDE
        ]
        for sent in ours:
            seen[sent["uuid"]].add(sent["type"])
        carriers += bool(ours)
    monitor.close()
    broker.close()

    assert {t: seen[t] for t in task_ids} == {t: WORKER_SIDE for t in task_ids}
    # Celery alone sends a message at every turn of its loop: about one per task here.
    assert carriers <= len(task_ids) // 3


def test_task_events_still_buffered_at_a_reconnection_leave_with_the_next_dispatcher(
    idle_redis_broker: tuple[str, redis.Redis],
) -> None:
    url, broker = idle_redis_broker
    monitor = broker.pubsub()
    # Pub/sub is shared by every database of a server: kombu prefixes the channel with the
    # database, and only this one's (no worker's heartbeats from another test) is listened to.
    monitor.psubscribe(f"/{url.rsplit('/', 1)[1]}.celeryev*")
    monitor.get_message(timeout=1)
    consumer = Consumer.__new__(Consumer)  # only its event dispatcher is used here
    with app.connection_for_write(url) as first, app.connection_for_write(url) as second:
        old = app.events.Dispatcher(first, hostname="w1", buffer_group=["task"])
        consumer.event_dispatcher = old
        old.send("task-started", uuid="t1")  # held for the timer
        # What Celery's Events step does when the worker reconnects to the broker:
        old.disable()
        consumer.event_dispatcher = None
        new = app.events.Dispatcher(second, hostname="w1", buffer_group=["task"])
        consumer.event_dispatcher = new
        new.extend_buffer(old)
        new.flush()

    message = monitor.get_message(timeout=2)
    monitor.close()
    assert message is not None and message["type"] == "pmessage"
    assert [(e["type"], e["uuid"]) for e in events_in(message)] == [("task-started", "t1")]
    assert new.buffer_limit == EVENT_BUFFER_LIMIT
