"""tasks.enqueue: deliveries go to the broker over pooled, long-lived connections."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import redis
from celery.utils.saferepr import saferepr

from eda.event import Event
from eda.flow import PRIORITIES
from tasks import app
from tasks.enqueue import CeleryEnqueuer
from tests.conftest import RedisServer
from tests.lanes import lane_length, lane_messages
from tests.redis_cost import cost

#: Where a delivery goes, on any broker; the Redis transport's own ways are marked apart.
pytestmark = pytest.mark.brokers


def connections_made(client: redis.Redis) -> int:
    return int(client.info("stats")["total_connections_received"])


@pytest.mark.redis_broker
def test_many_deliveries_share_a_few_broker_connections(
    idle_redis_broker: tuple[str, redis.Redis],
) -> None:
    url, broker = idle_redis_broker
    enqueuer = CeleryEnqueuer(app, url)
    event = Event.create(type="thing.happened", source="test", payload={})
    enqueuer.deliver(event, "tests.handlers:succeed", "warm-up")
    before = connections_made(broker)

    for n in range(40):
        enqueuer.deliver(event, "tests.handlers:succeed", f"task-{n}")

    assert connections_made(broker) - before <= 2
    assert lane_length(broker) == 41


@pytest.mark.redis_broker
def test_a_batch_of_deliveries_reaches_the_broker_with_their_sent_events(
    idle_redis_broker: tuple[str, redis.Redis], unique_type: Any
) -> None:
    url, broker = idle_redis_broker
    enqueuer = CeleryEnqueuer(app, url)
    kind = unique_type()  # bound afresh: the broker database is emptied after each test
    events = [Event.create(type=kind, source="test", payload={}) for _ in range(30)]
    monitor = broker.pubsub()
    monitor.psubscribe("*celeryev*")
    monitor.get_message(timeout=1)

    enqueuer.deliver_many([(e, "tests.handlers:succeed", f"task-{e.id}") for e in events])

    queued = lane_messages(broker)
    assert sorted(m["headers"]["id"] for m in queued) == sorted(f"task-{e.id}" for e in events)
    assert {m["properties"]["delivery_info"]["routing_key"] for m in queued} == {kind}
    sent = [monitor.get_message(timeout=1) for _ in events]
    assert {m["channel"].rsplit(b".", 1)[-1] for m in sent if m} == {b"sent"}
    bodies = [json.loads(base64.b64decode(json.loads(m["data"])["body"])) for m in sent if m]
    assert sorted(b["uuid"] for b in bodies) == sorted(f"task-{e.id}" for e in events)
    monitor.close()  # Flower sees each task as sent


@pytest.mark.redis_broker
def test_a_batch_reads_the_lane_bindings_once_and_again_after_binding_a_new_type(
    own_redis: tuple[RedisServer, redis.Redis], unique_type: Any
) -> None:
    server, counter = own_redis
    broker = redis.Redis.from_url(server.url.rsplit("/", 1)[0] + "/1")
    enqueuer = CeleryEnqueuer(app, server.url.rsplit("/", 1)[0] + "/1")
    kinds = [unique_type(name) for name in ("first", "second", "third")]  # each bound anew
    events = [Event.create(type=kind, source="test", payload={}) for kind in kinds for _ in "ab"]

    with cost(counter) as spent:
        enqueuer.deliver_many([(e, "tests.handlers:succeed", f"task-{e.id}") for e in events])

    queued = lane_messages(broker)
    assert sorted(m["headers"]["id"] for m in queued) == sorted(f"task-{e.id}" for e in events)
    assert {m["properties"]["delivery_info"]["routing_key"] for m in queued} == set(kinds)
    assert spent.of("smembers") == len(kinds)  # once after each new binding, not per message
    broker.close()


@pytest.mark.redis_broker
def test_a_batch_declares_each_lane_it_sends_to_on_a_broker_nobody_declared_it_on(
    own_redis: tuple[RedisServer, redis.Redis], unique_type: Any
) -> None:
    server, _ = own_redis
    url = server.url.rsplit("/", 1)[0] + "/1"
    enqueuer = CeleryEnqueuer(app, url)
    kinds = [unique_type("a", lane="alert"), unique_type("c", lane="code"), unique_type()]
    events = [Event.create(type=kind, source="test", payload={}) for kind in kinds for _ in "ab"]

    enqueuer.deliver_many([(e, "tests.handlers:succeed", f"task-{e.id}") for e in events])

    with redis.Redis.from_url(url) as broker:
        for lane, kind in zip(("alerts", "code", "default"), kinds, strict=True):
            queued = lane_messages(broker, lane)
            assert sorted(m["headers"]["id"] for m in queued) == sorted(
                f"task-{e.id}" for e in events if e.type == kind
            )


def test_route_priorities_are_read_the_way_each_broker_reads_them() -> None:
    from tasks.enqueue import broker_priority

    high, normal, low = (PRIORITIES[name] for name in ("high", "normal", "low"))
    assert [broker_priority(p, "redis") for p in (high, normal, low)] == [0, 5, 9]  # lowest first
    assert [broker_priority(p, "amqp") for p in (high, normal, low)] == [9, 4, 0]  # highest first


@pytest.mark.redis_broker
def test_a_traced_events_message_carries_its_trace_context(
    idle_redis_broker: tuple[str, redis.Redis],
) -> None:
    url, broker = idle_redis_broker
    enqueuer = CeleryEnqueuer(app, url)
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    traced = Event.create(
        type="thing.traced", source="test", payload={}, attributes={"traceparent": traceparent}
    )
    plain = Event.create(type="thing.plain", source="test", payload={})

    enqueuer.deliver_many(
        [(traced, "tests.handlers:succeed", "traced"), (plain, "tests.handlers:succeed", "plain")]
    )

    queued = lane_messages(broker)
    kwargs = {m["headers"]["id"]: json.loads(base64.b64decode(m["body"]))[1] for m in queued}
    # The worker's delivery span takes its parent from the message, not from a read of the
    # event; an event without a trace (tracing off here) adds nothing to its message.
    assert kwargs["traced"]["trace"] == {"traceparent": traceparent}
    assert "trace" not in kwargs["plain"]
    # The arguments' text (task events, Flower) is what Celery's saferepr would write.
    for message in queued:
        args, kwargs_sent, _ = json.loads(base64.b64decode(message["body"]))
        assert message["headers"]["argsrepr"] == saferepr(tuple(args), 1024)
        assert message["headers"]["kwargsrepr"] == saferepr(kwargs_sent, 1024)
    # Each carries its event's type: whether its routes give the delivery flow control.
    assert kwargs["plain"]["event_type"] == "thing.plain"
