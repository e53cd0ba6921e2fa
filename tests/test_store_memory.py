"""What an event costs in Redis: its records stay in the compact hash encoding."""

from __future__ import annotations

import redis

from eda.delivery import Deliveries, Status
from eda.event import Event
from eda.redis_server import COMPACT_HASH_VALUE
from eda.settings import Settings
from eda.store import EventStore
from tests.lifecycle import finish, queue, start

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
