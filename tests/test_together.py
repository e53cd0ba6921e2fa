"""eda.together: events published while another's round trip is under way go in the next.

Each test holds the store's Redis with ``CLIENT PAUSE ... WRITE`` (scripts wait) while
callers arrive, so that which calls travel together does not depend on timing: the
first caller's round trip is under way, the others queue behind it (the test reads
the queue), and the test lets Redis go once they have. Each test has a Redis of its
own: pausing it must not hold the session's workers.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from eda.errors import InvalidInput, StoreUnavailable
from eda.event import Event
from eda.settings import Settings
from eda.store import EventStore, Published
from tests.conftest import RedisServer, wait_for
from tests.workers import run_python

#: The name the store's connections give themselves, to find them in CLIENT LIST.
NAME = "together-store"


@pytest.fixture
def store(
    private_server: RedisServer, make_settings: Callable[..., Settings]
) -> Iterator[EventStore]:
    client = redis.Redis.from_url(
        private_server.url, decode_responses=True, client_name=NAME, socket_timeout=10
    )
    yield EventStore(client, make_settings(redis_url=private_server.url))
    client.close()


@pytest.fixture
def admin(private_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(private_server.url, decode_responses=True)
    yield client
    client.close()


def event(number: int, **fields: Any) -> Event:
    return Event.create(type="together.test", source="tests", payload={"n": number}, **fields)


def connections(admin: redis.Redis) -> int:
    """The store's connections to Redis, as the server lists them."""
    return sum(1 for client in admin.client_list() if client["name"] == NAME)


def publish_while_paused(
    store: EventStore, admin: redis.Redis, events: list[Event]
) -> list[Published | Exception]:
    """Publish each event from a thread of its own while Redis is paused; let Redis go
    once the first call is on its way and the others queue behind it."""
    results: list[Published | Exception] = [RuntimeError("not run")] * len(events)

    def publish(index: int) -> None:
        try:
            results[index] = store.publish(events[index])
        except Exception as exc:
            results[index] = exc

    admin.execute_command("CLIENT", "PAUSE", 30_000, "WRITE")
    threads = [threading.Thread(target=publish, args=(i,)) for i in range(len(events))]
    for thread in threads:
        thread.start()
    queued = store._publishing._queued
    wait_for(lambda: len(queued) == len(events) - 1)
    admin.execute_command("CLIENT", "UNPAUSE")
    for thread in threads:
        thread.join(timeout=30)
    return results


def test_events_published_during_a_round_trip_go_together_in_the_next(
    store: EventStore, admin: redis.Redis
) -> None:
    store.publish(event(0))  # the store's first connection, made before the pause
    events = [event(n) for n in range(1, 11)]

    results = publish_while_paused(store, admin, events)

    assert [r.event_id for r in results if isinstance(r, Published)] == [e.id for e in events]
    # Two round trips, the first call's and the nine's: one connection each at most.
    # Each caller on a connection of its own would have opened ten.
    assert connections(admin) <= 2
    assert {stored.event.id for stored in store.get_many([e.id for e in events])} == {
        e.id for e in events
    }


def test_each_caller_gets_its_own_calls_error_and_the_others_are_stored(
    store: EventStore, admin: redis.Redis
) -> None:
    taken = event(0)
    store.publish(taken)
    events = [event(1), event(2), Event.create(**{**taken.model_dump(), "payload": {"n": 3}})]
    events.append(event(4))

    results = publish_while_paused(store, admin, events)

    assert isinstance(results[2], InvalidInput)
    assert "is already stored" in str(results[2])
    stored = [r for r in results if isinstance(r, Published)]
    assert [r.event_id for r in stored] == [events[i].id for i in (0, 1, 3)]
    assert len(store.get_many([e.id for e in events])) == 4  # the three and the one before


def test_a_round_trip_that_fails_fails_each_of_its_callers_and_the_next_is_sent(
    store: EventStore, admin: redis.Redis, private_server: RedisServer
) -> None:
    store.publish(event(0))
    results: list[Any] = []
    events = [event(n) for n in range(1, 6)]

    def publish(one: Event) -> None:
        try:
            results.append(store.publish(one))
        except Exception as exc:
            results.append(exc)

    admin.execute_command("CLIENT", "PAUSE", 30_000, "WRITE")
    threads = [threading.Thread(target=publish, args=(one,)) for one in events]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(store._publishing._queued) == len(events) - 1)
    private_server.kill()  # the first call's round trip fails; so does the batch after it
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)

    assert len(results) == len(events)
    assert all(isinstance(result, StoreUnavailable) for result in results), results
    private_server.start()
    again = event(6)
    assert store.publish(again).event_id == again.id  # nothing is left waiting for ever


#: Greenlets of a gevent-patched process (gunicorn's gevent worker) publish while Redis
#: is paused: the first call's round trip, then the others' together.
GREENLETS = """
from gevent import monkey

monkey.patch_all()
import json, os, sys

import gevent
import redis

from eda.event import Event
from eda.settings import load
from eda.store import EventStore

url = os.environ["TOGETHER_URL"]
client = redis.Redis.from_url(url, decode_responses=True, client_name="together-store")
admin = redis.Redis.from_url(url, decode_responses=True)
store = EventStore(client, load({}, redis_url=url, prefix="greenlets"))
made = [Event.create(type="together.test", source="tests", payload={"n": n}) for n in range(9)]
store.publish(made[0])
admin.execute_command("CLIENT", "PAUSE", 30_000, "WRITE")
greenlets = [gevent.spawn(store.publish, one) for one in made[1:]]
while len(store._publishing._queued) < len(made) - 2:
    gevent.sleep(0.001)
admin.execute_command("CLIENT", "UNPAUSE")
gevent.joinall(greenlets, timeout=30, raise_error=True)
names = [c["name"] for c in admin.client_list()]
print(json.dumps({
    "published": [g.value.event_id for g in greenlets],
    "made": [one.id for one in made[1:]],
    "connections": names.count("together-store"),
}))
"""


def test_greenlets_publish_together_as_threads_do(private_server: RedisServer) -> None:
    done = run_python(GREENLETS, timeout=60, TOGETHER_URL=private_server.url)

    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["published"] == found["made"]
    assert found["connections"] <= 2  # a connection a greenlet would have been nine
