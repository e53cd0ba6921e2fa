"""tasks.enqueue: deliveries go to the broker over pooled, long-lived connections."""

from __future__ import annotations

import redis

from eda.event import Event
from tasks import app
from tasks.enqueue import CeleryEnqueuer


def connections_made(client: redis.Redis) -> int:
    return int(client.info("stats")["total_connections_received"])


def test_many_deliveries_share_a_few_broker_connections(
    idle_broker: tuple[str, redis.Redis],
) -> None:
    url, broker = idle_broker
    enqueuer = CeleryEnqueuer(app, url)
    event = Event.create(type="thing.happened", source="test", payload={})
    enqueuer.deliver(event, "tests.handlers:succeed", "warm-up")
    before = connections_made(broker)

    for n in range(40):
        enqueuer.deliver(event, "tests.handlers:succeed", f"task-{n}")

    assert connections_made(broker) - before <= 2
    prefix = app.conf.broker_transport_options.get("global_keyprefix", "")
    assert broker.llen(f"{prefix}default") == 41
