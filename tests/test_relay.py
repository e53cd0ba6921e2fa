"""eda.relay and the hand-over: the web stores, a relay dispatches."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from eda.core import Core
from eda.event import Event
from eda.relay import Relay
from eda.settings import Settings
from eda.store import EventStore
from tasks import app
from tasks.enqueue import CeleryEnqueuer
from tests.brokers import Broker
from tests.conftest import RedisServer, wait_for
from tests.redis_cost import cost
from tests.workers import ROOT

pytestmark = [pytest.mark.timeout(60), pytest.mark.brokers]


@pytest.fixture
def store(settings: Settings, client: redis.Redis) -> EventStore:
    return EventStore(client, settings)


@pytest.fixture
def waiting(broker_under_test: Broker, idle_broker: str) -> Callable[..., int]:
    """Messages waiting in a lane of this test's broker."""
    return lambda lane="default": broker_under_test.waiting(idle_broker, lane)


@pytest.fixture
def cores(
    settings: Settings, client: redis.Redis, idle_broker: str, live: Core
) -> tuple[Core, Core]:
    """(a core that dispatches itself, one that hands over) on this test's prefix and broker."""
    enqueuer = CeleryEnqueuer(app, idle_broker)
    inline = Core(settings, client, enqueuer, live.routes)
    deferring = Core(settings, client, enqueuer, live.routes, defer_dispatch=True)
    return inline, deferring


def event(kind: str = "thing.happened", **fields: Any) -> Event:
    return Event.create(type=kind, source="test", payload={}, **fields)


def test_publishing_with_notify_hands_the_event_over_once(store: EventStore) -> None:
    handed = event(dedupe_key="sender:1")
    kept = event()

    store.publish(handed, notify=True)
    store.publish(kept)
    duplicate = store.publish(event(dedupe_key="sender:1"), notify=True)

    assert duplicate.duplicate
    assert store.redis.lrange(store.keys.dispatch, 0, -1) == [handed.id]
    assert store.get(handed.id).status == "pending"  # swept should no relay take it


def test_taking_hands_over_up_to_the_limit_oldest_first(store: EventStore) -> None:
    ids = [store.publish(event(), notify=True).event_id for _ in range(5)]

    assert store.take_dispatch(3, wait=0.1).ids == ids[:3]
    assert store.take_dispatch(3, wait=0.1, block=False).ids == ids[3:]
    started = time.monotonic()
    assert store.take_dispatch(3, wait=0.2, block=False).ids == []
    assert 0.1 < time.monotonic() - started < 2


def test_a_relay_dispatches_each_handed_over_event_once(
    cores: tuple[Core, Core], waiting: Callable[..., int], unique_type: Any
) -> None:
    inline, deferring = cores
    kind = unique_type()
    inline.subscribe([kind], "tests.handlers:succeed")
    ids = [deferring.publish(kind, {"n": n}, "test").event_id for n in range(3)]
    assert {inline.get_event(i).status for i in ids} == {"pending"}
    assert waiting() == 0
    inline.dispatch(inline.get_event(ids[0]).event)  # another face got to this one first

    taken = Relay(inline, wait=0.1).dispatch_batch()

    assert taken == 3
    assert {inline.get_event(i).status for i in ids} == {"queued"}
    assert waiting() == 3
    assert inline.store.pending(older_than=0) == []


class CountingConnection(redis.Connection):
    """A redis-py connection that counts what it sends: one count a round trip."""

    sent = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sent += 1
        super().send_packed_command(command, check_health)


def test_a_batch_costs_the_store_the_same_few_round_trips_whatever_its_size(
    cores: tuple[Core, Core], waiting: Callable[..., int], settings: Settings, unique_type: Any
) -> None:
    inline, deferring = cores
    kind = unique_type()
    inline.subscribe([kind], "tests.handlers:succeed")
    inline.subscribe([kind], "tests.handlers:flaky")
    counting = redis.Redis.from_url(
        settings.redis_url, decode_responses=True, connection_class=CountingConnection
    )
    relay = Relay(Core(settings, counting, inline.enqueuer, inline.routes), wait=0.1)
    trips = []
    for size in (1, 1, 60):  # (the first batch also loads the store's scripts)
        ids = [deferring.publish(kind, {"n": n}, "test").event_id for n in range(size)]
        sent = CountingConnection.sent
        assert relay.dispatch_batch() == size
        trips.append(CountingConnection.sent - sent)
        assert {inline.get_event(i).status for i in ids} == {"queued"}
    assert trips[1] == trips[2] <= 8
    assert waiting() == 2 * 62


@pytest.mark.redis_broker
def test_a_batch_costs_redis_a_few_round_trips_store_and_broker_alike(
    make_settings: Callable[..., Settings],
    own_redis: tuple[RedisServer, redis.Redis],
    unique_type: Any,
) -> None:
    """Counted by the server, store and broker (its database 1) together.

    A batch waits for its first event (unless the last one was full), takes the rest with
    what dispatching them needs, records their deliveries, reads the lane bindings once,
    sends the messages (one pipeline per 50), marks them sent: 6 round trips for 50
    events. The server counts reads, and a large pipeline arrives in several: about 27.
    When bindings were read once a message, 50 events cost more than 50.
    """
    server, counter = own_redis
    settings = make_settings(redis_url=server.url)
    core = Core(settings, None, CeleryEnqueuer(app, server.url.rsplit("/", 1)[0] + "/1"))
    deferring = Core(settings, core.redis, defer_dispatch=True)
    kind = unique_type()
    core.subscribe([kind], "tests.handlers:succeed")
    relay = Relay(core, batch=50, wait=0.1)
    for _ in range(2):  # the first batches load the scripts, bind the type, connect
        deferring.publish(kind, {}, "test")
        relay.dispatch_batch()
    ids = [deferring.publish(kind, {"n": n}, "test").event_id for n in range(100)]

    for _ in range(2):  # the first waits for an event; the second, after a full one, not
        with cost(counter) as spent:
            assert relay.dispatch_batch() == 50
        assert spent.reads <= 35, spent
        assert spent.of("smembers") == spent.of("lpop") == 1, spent
    assert {core.get_event(i).status for i in ids} == {"queued"}


class RefusingBroker(CeleryEnqueuer):
    """The real enqueuer, with a broker that refuses every batch."""

    def deliver_many(
        self, deliveries: list[tuple[Event, str, str]], *, replay: bool = False
    ) -> None:
        if deliveries:
            raise ConnectionError("the broker went away")


def test_a_refused_batch_leaves_its_events_pending_for_the_sweeper(
    cores: tuple[Core, Core],
    settings: Settings,
    make_settings: Any,
    client: redis.Redis,
    unique_type: Any,
) -> None:
    inline, deferring = cores
    kind = unique_type()
    inline.subscribe([kind], "tests.handlers:succeed")
    refusing = Core(settings, client, RefusingBroker(app), inline.routes)
    ids = [deferring.publish(kind, {"n": n}, "test").event_id for n in range(3)]

    assert Relay(refusing, wait=0.1).dispatch_batch() == 3

    for event_id in ids:
        stored = inline.get_event(event_id)
        assert stored.status == "pending"
        assert stored.deliveries["tests.handlers:succeed"]["enqueue_failed"] is True
    assert sorted(inline.store.pending(older_than=0)) == sorted(ids)
    sweeper = Core(make_settings(outbox_grace=0), client, inline.enqueuer, inline.routes)
    assert sweeper.sweep() == 3
    assert {inline.get_event(i).status for i in ids} == {"queued"}


#: What a broker client may quote back in its error: the message it could not send.
QUOTED = "while sending {'card': 'secret-4242'}"


class BrokerQuotingWhatItRefused(CeleryEnqueuer):
    """The real enqueuer, with a broker whose refusal quotes what it was sent on a second line."""

    def deliver_many(
        self, deliveries: list[tuple[Event, str, str]], *, replay: bool = False
    ) -> None:
        if deliveries:
            raise ConnectionError(f"the broker went away\n{QUOTED}")


def test_a_refused_dispatch_is_logged_and_recorded_by_its_class_and_first_line_only(
    cores: tuple[Core, Core],
    settings: Settings,
    make_settings: Any,
    client: redis.Redis,
    unique_type: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    inline, deferring = cores
    kind = unique_type()
    inline.subscribe([kind], "tests.handlers:succeed")
    refusing = Core(settings, client, BrokerQuotingWhatItRefused(app), inline.routes)
    sweeping = Core(make_settings(outbox_grace=0), client, refusing.enqueuer, inline.routes)

    with caplog.at_level(logging.WARNING, logger="eda"):
        handed = deferring.publish(kind, {}, "test").event_id
        Relay(refusing, wait=0.1).dispatch_batch()
        published = refusing.publish(kind, {}, "test").event_id  # dispatched in line
        sweeping.sweep()

    summary = "ConnectionError: the broker went away"
    assert {r.getMessage() for r in caplog.records if r.name in ("eda.core", "eda.relay")} == {
        f"dispatch deferred to the sweeper: {summary}",
        f"sweep could not dispatch: {summary}",
    }
    assert QUOTED not in caplog.text
    for event_id in (handed, published):
        history = inline.get_event(event_id).deliveries["tests.handlers:succeed"]["history"]
        assert history[-1]["reason"] == f"enqueue failed, will be swept: {summary}"


class BrokerBlinkingOnce(CeleryEnqueuer):
    """The real enqueuer, with a broker that refuses one batch and then comes back."""

    def __init__(self, broker_url: str) -> None:
        super().__init__(app, broker_url)
        self.refused = 0

    def deliver_many(
        self, deliveries: list[tuple[Event, str, str]], *, replay: bool = False
    ) -> None:
        if deliveries and not self.refused:
            self.refused += 1
            raise ConnectionError("the broker blinked")
        super().deliver_many(deliveries, replay=replay)


def test_a_batch_the_broker_refused_once_is_sent_again_at_once(
    cores: tuple[Core, Core],
    idle_broker: str,
    waiting: Callable[..., int],
    settings: Settings,
    client: redis.Redis,
    unique_type: Any,
) -> None:
    inline, deferring = cores
    kind = unique_type()
    inline.subscribe([kind], "tests.handlers:succeed")
    blinking = BrokerBlinkingOnce(idle_broker)
    ids = [deferring.publish(kind, {"n": n}, "test").event_id for n in range(3)]

    Relay(Core(settings, client, blinking, inline.routes), wait=0.1).dispatch_batch()

    assert blinking.refused == 1
    for event_id in ids:
        stored = inline.get_event(event_id)
        assert stored.status == "queued"
        assert stored.deliveries["tests.handlers:succeed"]["enqueue_failed"] is False
    assert inline.store.pending(older_than=0) == []
    assert waiting() == 3


def test_the_web_hands_events_over_and_a_worker_dispatches_them(
    live: Core, live_settings: Settings, client: redis.Redis, unique_type: Any
) -> None:
    from webhooks.app import create_app
    from webhooks.extension import services

    with create_app(settings=live_settings).app_context():
        assert services().core.defer_dispatch
    web = Core(live_settings, client, live.enqueuer, live.routes, defer_dispatch=True)
    kind = unique_type()
    live.subscribe([kind], "tests.handlers:succeed")

    event_id = web.publish(kind, {}, "test").event_id

    wait_for(lambda: live.get_event(event_id).status == "succeeded")
    history = live.get_event(event_id).deliveries["tests.handlers:succeed"]["history"]
    assert [h["status"] for h in history] == ["queued", "running", "succeeded"]


def test_the_relay_process_dispatches_until_it_is_told_to_stop_and_warns_of_nothing(
    settings: Settings,
    idle_broker: str,
    waiting: Callable[..., int],
    cores: tuple[Core, Core],
    unique_type: Any,
    tmp_path: Path,
) -> None:
    inline, deferring = cores
    kind = unique_type()
    inline.subscribe([kind], "tests.handlers:succeed")
    env = {
        **os.environ,
        "EDA_PREFIX": settings.prefix,
        "CELERY_BROKER_URL": idle_broker,
        "PYTHONPATH": str(ROOT),
        "PYTHONWARNINGS": "default",  # every warning shows, as runpy's would
    }
    log = tmp_path / "relay.log"
    command = [sys.executable, "-m", "tasks.relay"]
    with open(log, "wb") as output:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        event_id = deferring.publish(kind, {}, "test").event_id
        wait_for(lambda: waiting() == 1)  # recorded queued, then published
        assert inline.get_event(event_id).status == "queued"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0, log.read_text()[-2000:]
    text = log.read_text()
    assert "relay started" in text
    assert "relay stopped" in text
    assert "RuntimeWarning" not in text, text


def test_workers_relay_unless_started_without_the_relay() -> None:
    from tasks.relay import RelayStep

    assert any("--without-relay" in option.opts for option in app.user_options["worker"])
    assert "tasks.relay:RelayStep" in app.steps["worker"]
    assert RelayStep(object()).include_if(object())
    assert not RelayStep(object(), without_relay=True).include_if(object())


def test_a_relay_told_to_stop_ends_its_wait_for_work_at_once(
    cores: tuple[Core, Core], unique_type: Any
) -> None:
    import threading

    inline, deferring = cores
    kind = unique_type()
    inline.subscribe([kind], "tests.handlers:succeed")
    relay = Relay(inline, wait=30.0, name=f"relay-{kind}")
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,))
    thread.start()
    try:
        first = deferring.publish(kind, {}, "test").event_id
        wait_for(lambda: inline.get_event(first).status == "queued")  # it waits for more now
        started = time.monotonic()
        stop.set()
        relay.wake()
        thread.join(timeout=10)
        assert not thread.is_alive()
        assert time.monotonic() - started < 5  # its wait was thirty seconds long
    finally:
        stop.set()
        relay.wake()
        thread.join(timeout=40)
    # the word is taken by the wait it ended, or expires: nothing is left for the dispatchers
    assert inline.store.take_dispatch(10, 0.01, wake=relay.name).ids == []
