"""The broker transport: kombu's, with a collected connection's pool a connection error."""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu import Connection, Exchange, Queue
from kombu.asynchronous import Hub
from kombu.transport import redis as kombu_redis

import tasks
from eda.core import Core
from eda.settings import load
from tasks import app
from tasks.broker import Transport
from tasks.enqueue import CeleryEnqueuer
from tests.conftest import RedisServer, wait_for
from tests.handlers import attempts
from tests.lanes import lane_length, lane_messages
from tests.redis_cost import cost
from tests.workers import FAST, Worker


def collected_channel(url: str, transport: type) -> Any:
    """A channel as Celery's consumer leaves it after a broker error, before closing it.

    ``Connection.collect`` detached the transport from its connection, and the
    channel's close (which could not finish while the broker was away) dropped its
    pool before restoring the unacknowledged messages, which needs a new one.
    """
    connection = Connection(url, transport=transport)
    channel: Any = connection.default_channel
    channel._disconnect_pools()
    connection._do_close_transport()  # what collect() does last
    return channel


def test_kombus_own_channel_fails_with_no_connection_error_once_collected(
    redis_server: RedisServer,
) -> None:
    # The upstream behaviour tasks/broker.py exists for: when this test fails, kombu fixed
    # it, and tasks/broker.py can go.
    channel = collected_channel(redis_server.url, kombu_redis.Transport)
    with pytest.raises(AttributeError, match="hostname"):
        channel.pool  # noqa: B018 (the property builds the pool)


def test_our_channel_makes_it_a_connection_error_that_closing_ignores(
    redis_server: RedisServer,
) -> None:
    channel = collected_channel(redis_server.url, Transport)
    with pytest.raises(redis.ConnectionError):
        channel.pool  # noqa: B018
    assert isinstance(redis.ConnectionError(), channel.connection_errors)


def test_the_broker_url_keeps_its_redis_scheme_with_our_transport() -> None:
    with app.connection_for_write() as connection:
        assert isinstance(connection.transport, Transport)
        assert connection.as_uri().startswith("redis://")


# -- the worker's steps: acknowledgements, records and takes in one round trip -------------------

LANES = ("first", "second")


def lane_queues() -> list[Queue]:
    exchange = Exchange("steps", type="direct")
    return [Queue(name, exchange, routing_key=name) for name in LANES]


def publish(url: str, messages: list[tuple[str, int, str]]) -> None:
    """(lane, priority, body) messages, in this order; on Redis 0 is the highest priority."""
    with Connection(url, transport=Transport) as connection, connection.Producer() as producer:
        for lane, priority, body in messages:
            producer.publish(
                body, exchange="steps", routing_key=lane, priority=priority, declare=lane_queues()
            )


class Looped:
    """A consumer of the lanes under a kombu event loop, as Celery's worker runs it."""

    def __init__(self, url: str, prefetch: int, **options: Any) -> None:
        self.connection = Connection(url, transport=Transport, transport_options=options)
        self.connection.connect()
        self.received: list[Any] = []
        self.consumer = self.connection.Consumer(
            lane_queues(), callbacks=[lambda body, message: self.received.append(message)]
        )
        self.consumer.qos(prefetch_count=prefetch)
        self.consumer.consume()
        self.hub = Hub()
        self.connection.transport.register_with_event_loop(self.connection.connection, self.hub)
        self.channel: Any = self.consumer.channel

    def turns(self, count: int = 3) -> list[str]:
        for _ in range(count):
            self.hub.run_once()
        return [message.payload for message in self.received]

    def close(self) -> None:
        self.hub.close()
        self.connection.close()


@pytest.fixture
def looped(idle_redis_broker: tuple[str, redis.Redis]) -> Iterator[Callable[..., Looped]]:
    made: list[Looped] = []

    def make(prefetch: int, url: str = "", **options: Any) -> Looped:
        made.append(Looped(url or idle_redis_broker[0], prefetch, **options))
        return made[-1]

    yield make
    for consumer in made:
        consumer.close()


def test_a_step_takes_by_priority_each_lane_in_turn_and_records_what_it_took(
    idle_redis_broker: tuple[str, redis.Redis], looped: Callable[..., Looped]
) -> None:
    url, broker = idle_redis_broker
    low = [(lane, 9, f"{lane}-low-{n}") for lane in LANES for n in range(2)]
    high = [("first", 0, f"first-high-{n}") for n in range(3)] + [("second", 0, "second-high-0")]
    publish(url, low + high)
    consumer = looped(prefetch=5)

    taken = consumer.turns()

    assert taken == ["first-high-0", "second-high-0", "first-high-1", "first-high-2", "first-low-0"]
    assert broker.hlen("unacked") == broker.zcard("unacked_index") == 5  # kombu's own records
    assert lane_length(broker, "first") + lane_length(broker, "second") == 3


def test_acknowledgements_are_forgotten_in_the_next_step_and_kombus_restore_reads_the_rest(
    idle_redis_broker: tuple[str, redis.Redis], looped: Callable[..., Looped]
) -> None:
    url, broker = idle_redis_broker
    publish(url, [("first", 5, f"message-{n}") for n in range(4)])
    consumer = looped(prefetch=4)
    consumer.turns()
    for message in consumer.received[:2]:
        message.ack()
    assert broker.hlen("unacked") == 4  # on the loop's thread: left to the step of this turn

    consumer.turns(1)
    assert broker.hlen("unacked") == broker.zcard("unacked_index") == 2

    # The upstream behaviour the records rely on: once the consumer is gone, kombu's own
    # restore (past the visibility timeout) puts what it never acknowledged back, whole.
    consumer.channel.client.connection.disconnect()  # its BRPOP, as a killed worker's
    options = {"visibility_timeout": 0}
    with Connection(url, transport=kombu_redis.Transport, transport_options=options) as other:
        other.default_channel.qos.restore_visible(num=10, interval=1)
    assert broker.hlen("unacked") == 0
    restored = lane_messages(broker, "first")
    assert sorted(base64.b64decode(m["body"]).decode() for m in restored) == [
        "message-2",
        "message-3",
    ]
    assert all(m["headers"]["redelivered"] for m in restored)


@pytest.fixture
def own_broker(
    own_redis: tuple[RedisServer, redis.Redis],
) -> Iterator[tuple[str, redis.Redis, redis.Redis]]:
    """The URL and a client of the broker database of a Redis of the test's own, and a
    client of the server to count with: no other consumer's round trips in the counts."""
    server, client = own_redis
    url = server.url.rsplit("/", 1)[0] + "/1"
    broker = redis.Redis.from_url(url)
    yield url, broker, client
    broker.close()


def one_turn(consumer: Looped, client: redis.Redis) -> tuple[list[str], tuple[int, int, int]]:
    """What the consumer was handed so far, after one more turn of its loop, and the turn's
    round trips, scripts and BRPOPs."""
    with cost(client) as spent:
        taken = consumer.turns(1)
    return taken, (spent.reads, spent.of("evalsha"), spent.of("brpop"))


def test_a_message_brpop_brings_is_recorded_by_a_step_written_with_the_next_brpop(
    own_broker: tuple[str, redis.Redis, redis.Redis], looped: Callable[..., Looped]
) -> None:
    url, broker, client = own_broker
    consumer = looped(prefetch=4, url=url)
    assert consumer.turns() == []  # the lanes are empty: its BRPOP waits

    publish(url, [("first", 5, f"message-{n}") for n in range(3)])  # BRPOP has the first
    taken, spent = one_turn(consumer, client)
    # its record, with the two others taken, and the next BRPOP: one write
    assert taken == ["message-0", "message-1", "message-2"]
    assert spent == (1, 1, 1)
    assert broker.hlen("unacked") == broker.zcard("unacked_index") == 3

    for message in consumer.received:
        message.ack()  # wait for the BRPOP's reply: they go with the next write
    publish(url, [("first", 5, f"message-{n}") for n in range(3, 7)])
    taken, spent = one_turn(consumer, client)
    # the acknowledgements, message-3's record, two taken, and a BRPOP whose message
    # came back with the step's reply, read in the same turn and recorded on its own
    # (the prefetch limit left no room for another BRPOP)
    assert taken[3:] == ["message-3", "message-4", "message-5", "message-6"]
    assert spent == (2, 2, 1)
    assert broker.hlen("unacked") == broker.zcard("unacked_index") == 4


def test_acknowledgements_left_when_brpop_timed_out_go_with_the_next_brpop(
    own_broker: tuple[str, redis.Redis, redis.Redis], looped: Callable[..., Looped]
) -> None:
    url, broker, client = own_broker
    publish(url, [("first", 5, "message-0")])
    consumer = looped(prefetch=2, url=url)
    assert consumer.turns(1) == ["message-0"]  # a step took it; the lanes are empty now
    consumer.received[0].ack()
    for _ in range(50):  # until its BRPOP, a second long, has timed out
        if not consumer.channel._in_poll:
            break
        consumer.hub.run_once()
    assert broker.hlen("unacked") == 1  # the acknowledgement waited for the BRPOP's reply

    publish(url, [("first", 5, "message-1")])
    taken, spent = one_turn(consumer, client)
    # the acknowledgement and the next BRPOP in one write; the BRPOP's message came back
    # with the step's reply, read in the same turn, and recorded with the next BRPOP
    assert taken == ["message-0", "message-1"]
    assert spent == (2, 2, 2)
    assert broker.hlen("unacked") == broker.zcard("unacked_index") == 1


def test_closing_ends_a_pending_brpop_rather_than_wait_for_its_timeout(
    looped: Callable[..., Looped],
) -> None:
    consumer = looped(prefetch=2, polling_interval=30)  # a BRPOP thirty seconds long
    assert consumer.turns(1) == []
    assert consumer.channel._in_poll  # the lanes are empty: its BRPOP waits
    started = time.monotonic()
    consumer.connection.close()
    assert time.monotonic() - started < 5
    assert not consumer.channel._in_poll


def test_a_signal_wakes_the_workers_event_loop_at_once() -> None:
    # Celery's handler of SIGTERM sets a flag the loop reads between two polls; Python
    # resumes a poll a signal interrupted, which waits a second when the worker is idle.
    import socket
    import threading
    from types import SimpleNamespace

    from tasks.worker import WakeOnSignal

    hub = Hub()
    idle, other_end = socket.socketpair()  # a reader that never becomes ready
    hub.add_reader(idle, lambda: None)
    handled: list[int] = []
    handler = signal.signal(signal.SIGUSR2, lambda number, _: handled.append(number))
    wakeup = signal.set_wakeup_fd(-1)
    step = WakeOnSignal(SimpleNamespace())
    try:
        step.start(SimpleNamespace(hub=hub))
        loop = hub.create_loop()
        threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGUSR2)).start()
        started = time.monotonic()
        next(loop)  # one poll, of a second (no timer is due sooner)
        assert time.monotonic() - started < 0.6
        assert handled == [signal.SIGUSR2]
    finally:
        signal.set_wakeup_fd(wakeup)
        signal.signal(signal.SIGUSR2, handler)
        hub.close()
        for end in (idle, other_end, *(step.sockets or ())):
            end.close()


# -- through a real worker ----------------------------------------------------------------------

#: Deliveries counted: enough that the worker's idle chatter (heartbeat, a BRPOP's timeout)
#: is a few hundredths of a round trip each.
COUNTED = 200


def round_trips(client: redis.Redis) -> int:
    """The reads the server processed so far: a round trip each (the INFO asking, not yet)."""
    return int(client.info("stats")["total_reads_processed"])


def backlog_round_trips(core: Core, client: redis.Redis, worker: Worker, event_type: str) -> float:
    """Round trips a delivery of a backlog of COUNTED costs (the worker is held while the
    backlog is made), all of them succeeded."""
    os.kill(worker.process.pid, signal.SIGSTOP)
    ids = [core.publish(event_type, {}, "test").event_id for _ in range(COUNTED)]
    before = round_trips(client)
    os.kill(worker.process.pid, signal.SIGCONT)
    polls = itertools.count(1)  # each poll is a round trip of ours

    def settled() -> int:
        made = next(polls)
        return made if client.zcard(core.keys.inflight) == 0 else 0

    made = wait_for(settled, timeout=60)
    spent = (round_trips(client) - before - made - 1) / COUNTED  # less our polls and INFO
    statuses = {core.get_event(i).deliveries["tests.handlers:noop"]["status"] for i in ids}
    assert statuses == {"succeeded"}
    return spent


@contextlib.contextmanager
def counted(tmp_path: Path, **env: str) -> Iterator[tuple[Core, redis.Redis, dict[str, str]]]:
    """A Redis server of the test's own (store in database 0, broker in 1), so that what it
    counts is the worker's and the test's alone; a core dispatching to it, and the
    environment of a worker of it."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    env = {
        "REDIS_URL": server.url,
        "CELERY_BROKER_URL": server.url.rsplit("/", 1)[0] + "/1",
        "EDA_PREFIX": f"trips-{uuid.uuid4().hex[:8]}",
        **env,
    }
    client = redis.Redis.from_url(server.url)
    settings = load({**os.environ, **FAST, **env})
    registry, routes = tasks.handlers(settings)
    enqueuer = CeleryEnqueuer(tasks.app, broker_url=env["CELERY_BROKER_URL"])
    try:
        yield Core(settings, enqueuer=enqueuer, routes=routes, handlers=registry), client, env
    finally:
        client.close()
        server.stop()


def test_a_delivery_that_succeeds_costs_the_worker_at_most_three_round_trips(
    tmp_path: Path, unique_type: Callable[[str], str]
) -> None:
    """Take, start, finish: BRPOP, kombu's record of each message and its acknowledgement
    were a round trip each (five in all); now a step of the worker's event loop forgets
    the acknowledged and takes and records the next messages in one."""
    with counted(tmp_path) as (core, client, env):
        worker = Worker(tmp_path / "worker.log", env=env, concurrency=64)  # as the Procfile's
        try:
            event_type = unique_type("counted")
            core.subscribe([event_type], "tests.handlers:noop")
            backlog_round_trips(core, client, worker, event_type)  # its threads connect
            spent = backlog_round_trips(core, client, worker, event_type)
            assert spent <= 3.0, f"{spent:.2f} round trips a delivery"
        finally:
            worker.stop()


#: Lone messages counted, after a few that let the worker's pool threads connect.
LONE = 10
WARM = 3
#: Counts of LONE, whose median is taken: kombu's housekeeping (a binding table refreshed
#: and swept a second after the worker starts, then every minute) falls in one at most.
COUNTS = 3


def counters(client: redis.Redis) -> dict[str, int]:
    """Reads the server processed so far (the INFO asking, not yet), and its calls by command."""
    info = client.info("all")
    calls = {
        k.removeprefix("cmdstat_"): int(v["calls"])
        for k, v in info.items()
        if k.startswith("cmdstat_")
    }
    return {"reads": int(info["total_reads_processed"]), **calls}


def test_a_lone_message_to_an_idle_worker_costs_it_at_most_three_round_trips(
    tmp_path: Path, unique_type: Callable[[str], str]
) -> None:
    """A message that finds the worker waiting (its BRPOP) and nothing else in the lanes:
    BRPOP woken, the step recording it, start, finish, the step forgetting it were five
    round trips; now the record and the previous message's acknowledgement go with the
    next BRPOP, in one write. The worker's idle chatter is left out: task events and
    heartbeats (PUBLISH), a BRPOP that timed out (none, unless the machine stalls), and
    kombu's housekeeping (the median of three counts)."""
    quiet = {"EDA_HEARTBEAT_INTERVAL": "600"}  # the store's heartbeat, once at the start
    with counted(tmp_path, **quiet) as (core, client, env):
        event_type = unique_type("lone")
        core.subscribe([event_type], "tests.handlers:noop")
        # Made before the worker runs, then let into its lane one at a time by the test.
        ids = [core.publish(event_type, {}, "test").event_id for _ in range(WARM + LONE * COUNTS)]
        broker = redis.Redis.from_url(env["CELERY_BROKER_URL"])
        (lane,) = [key for key in broker.scan_iter() if broker.type(key) == b"list"]
        broker.rename(lane, "staged")
        options = ("--without-relay", "--without-heartbeat")
        worker = Worker(tmp_path / "worker.log", env=env, concurrency=64, options=options)
        polls = itertools.count(1)  # each poll is a round trip of ours

        def one(event_id: str) -> None:
            broker.lmove("staged", lane, "RIGHT", "LEFT")

            def succeeded() -> bool:
                next(polls)
                return client.hget(core.keys.event(event_id), "status") == b"succeeded"

            wait_for(succeeded)

        def count(event_ids: list[str]) -> tuple[float, dict[str, int]]:
            before = counters(client)
            made = next(polls)
            for event_id in event_ids:
                one(event_id)
            after = counters(client)
            spent = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
            ours = LONE + next(polls) - made  # the moves, the polls between, the first INFO
            idle = spent.get("publish", 0) + spent.get("brpop", 0) - LONE
            return (spent["reads"] - ours - idle) / LONE, spent

        try:
            wait_for(lambda: any(c["cmd"] == "brpop" for c in client.client_list()))
            for event_id in ids[:WARM]:
                one(event_id)
            counts = [count(ids[n : n + LONE]) for n in range(WARM, len(ids), LONE)]
            trips, spent = sorted(counts, key=lambda counted: counted[0])[COUNTS // 2]
            print("LONE", [c[0] for c in counts])
            assert trips <= 3.0, f"{trips:.2f} round trips a lone delivery: {spent}"
        finally:
            worker.stop()
            broker.close()


#: A worker whose unacknowledged messages come back after two seconds.
SHORT_VISIBILITY = {
    "EDA_VISIBILITY_TIMEOUT": "2",
    "EDA_TASK_TIME_LIMIT": "1.5",
    "EDA_TASK_SOFT_TIME_LIMIT": "1.2",
}


def test_a_killed_worker_loses_none_of_the_messages_it_took_ahead(
    private_broker: Any, client: Any, unique_type: Callable[[str], str], tmp_path: Path
) -> None:
    broker_url, core = private_broker(12)
    broker = redis.Redis.from_url(broker_url)
    env = {"CELERY_BROKER_URL": broker_url, **SHORT_VISIBILITY}
    ahead = ("--prefetch-multiplier", "4")  # two running, six more taken and waiting
    first = Worker(tmp_path / "first.log", env, name="doomed", concurrency=2, options=ahead)
    event_type = unique_type("held")
    core.subscribe([event_type], "tests.handlers:slow")
    ids = [core.publish(event_type, {"seconds": 0.4}, "test").event_id for _ in range(12)]
    wait_for(lambda: broker.hlen("unacked") >= 8)

    first.kill()
    unfinished = sum(
        core.get_event(i).deliveries["tests.handlers:slow"]["status"] != "succeeded" for i in ids
    )
    # every message the worker took and did not finish is recorded for kombu's restore
    assert broker.hlen("unacked") + lane_length(broker) >= unfinished
    second = Worker(tmp_path / "second.log", env, name="rescuer")
    try:

        def settled() -> bool:
            deliveries = [core.get_event(i).deliveries["tests.handlers:slow"] for i in ids]
            return all(delivery["status"] == "succeeded" for delivery in deliveries)

        wait_for(settled, timeout=40, interval=0.3)
        assert all(1 <= len(attempts(client, i, "slow")) <= 2 for i in ids)
        # the rescuer, idle now, forgets its last acknowledgements with its next BRPOP
        wait_for(lambda: broker.hlen("unacked") == 0, timeout=5)
    finally:
        second.stop()
        broker.close()
