"""eda.store: publishing, history, retention, delivery statuses and acknowledgements in Redis."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from eda.delivery import Deliveries, Status
from eda.errors import InvalidInput, NotFound, StoreUnavailable
from eda.event import Event
from eda.keys import Keys
from eda.redis_server import free_port
from eda.settings import Settings
from eda.store import ACK_STATUSES, EventStore, Taken
from tests.conftest import RedisServer
from tests.lifecycle import finish, queue, start

LUA = Path(__file__).resolve().parent.parent / "eda" / "lua"


@pytest.fixture
def store(settings: Settings, client: redis.Redis) -> EventStore:
    return EventStore(client, settings)


@pytest.fixture
def make_store(
    make_settings: Callable[..., Settings], client: redis.Redis
) -> Callable[..., EventStore]:
    """A store on this test's prefix with settings overridden."""
    return lambda **overrides: EventStore(client, make_settings(**overrides))


def event(event_type: str = "alert.triggered", **fields: Any) -> Event:
    return Event.create(
        type=event_type, source="tests", payload=fields.pop("payload", {}), **fields
    )


def published(store: EventStore, event_type: str = "alert.triggered", **fields: Any) -> Event:
    """An event, published."""
    sent = event(event_type, **fields)
    store.publish(sent)
    return sent


def footprint(client: redis.Redis, prefix: str) -> dict[str, Any]:
    """Every key under the prefix with its type and size: what a write would change."""
    found: dict[str, Any] = {}
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        kind = client.type(key)
        size = {
            "stream": client.xlen,
            "zset": client.zcard,
            "hash": client.hlen,
            "string": client.strlen,
        }[kind](key)
        found[key] = (kind, size)
    return found


def pause() -> None:
    """Let the clock move past the current millisecond, the resolution of stream ids."""
    time.sleep(0.003)


# -- publish and get ---------------------------------------------------------------------------


def test_a_published_event_is_stored_pending_with_every_field(
    store: EventStore, client: redis.Redis, prefix: str
) -> None:
    sent = event(payload={"severity": "high"}, subject="svc", correlation_id="c1")
    published = store.publish(sent)
    assert (published.event_id, published.duplicate) == (sent.id, False)
    assert re.fullmatch(r"\d+-\d+", published.stream_id)

    stored = store.get(sent.id)
    assert stored.event == sent
    assert (stored.status, stored.stream_id, stored.deliveries) == (
        "pending",
        published.stream_id,
        {},
    )
    keys = Keys(prefix)
    assert client.xrange(keys.stream) == [
        (published.stream_id, {"id": sent.id, "type": "alert.triggered"})
    ]
    assert client.xrange(keys.type_stream("alert.triggered")) == [
        (published.stream_id, {"id": sent.id})
    ]
    assert client.zscore(keys.pending, sent.id) is not None


def test_the_stored_form_is_plain_json(store: EventStore) -> None:
    sent = event(payload={"n": 1})
    store.publish(sent)
    data = store.get(sent.id).as_dict()
    assert data["id"] == sent.id
    assert data["payload"] == {"n": 1}
    assert data["time"].endswith("Z")
    assert (data["status"], data["deliveries"]) == ("pending", [])
    assert "deliveries" not in store.get(sent.id).as_dict(with_deliveries=False)


def test_getting_an_unknown_id_is_not_found(store: EventStore) -> None:
    with pytest.raises(NotFound) as caught:
        store.get("no-such-event")
    assert caught.value.field == "event_id"
    assert "no-such-event" in caught.value.reason


def test_the_event_alone_is_read_in_one_command_without_its_deliveries(
    store: EventStore, client: redis.Redis
) -> None:
    sent = event(payload={"n": 1})
    store.publish(sent)
    before = client.info("stats")["total_commands_processed"]

    read = store.event(sent.id)

    assert client.info("stats")["total_commands_processed"] - before == 2  # HGET, and INFO
    assert (read.id, read.payload) == (sent.id, {"n": 1})
    with pytest.raises(NotFound):
        store.event("no-such-event")


def test_get_many_returns_the_stored_events_in_order_and_skips_unknown_ids(
    store: EventStore,
) -> None:
    first, second = event(), event()
    store.publish(first)
    store.publish(second)
    found = store.get_many([second.id, "missing", first.id])
    assert [s.event.id for s in found] == [second.id, first.id]


def test_publishing_an_id_that_is_already_stored_is_invalid_input(
    store: EventStore, client: redis.Redis, prefix: str
) -> None:
    sent = published(store)
    before = footprint(client, prefix)
    with pytest.raises(InvalidInput) as caught:
        store.publish(event(id=sent.id))
    assert caught.value.field == "id"
    assert footprint(client, prefix) == before


def test_prefixes_keep_deployments_apart(
    make_store: Callable[..., EventStore], store: EventStore
) -> None:
    other = make_store(prefix=f"{store.settings.prefix}-other")
    sent = published(store)
    assert other.history() == []
    with pytest.raises(NotFound):
        other.get(sent.id)


# -- dedupe ------------------------------------------------------------------------------------


def test_a_dedupe_key_seen_before_returns_the_original_and_writes_nothing(
    store: EventStore, client: redis.Redis, prefix: str
) -> None:
    original = event(dedupe_key="delivery-1", payload={"n": 1})
    first = store.publish(original)
    before = footprint(client, prefix)

    again = store.publish(event(dedupe_key="delivery-1", payload={"n": 2}))
    assert (again.event_id, again.duplicate) == (original.id, True)
    assert first.duplicate is False
    assert footprint(client, prefix) == before
    assert store.get(original.id).event.payload == {"n": 1}


def test_the_dedupe_key_expires_after_its_ttl(
    make_store: Callable[..., EventStore], client: redis.Redis, prefix: str
) -> None:
    store = make_store(dedupe_ttl=60)
    store.publish(event(dedupe_key="delivery-ttl"))
    assert 0 < client.ttl(Keys(prefix).dedupe("delivery-ttl")) <= 60


def test_events_without_a_dedupe_key_are_never_duplicates(store: EventStore) -> None:
    results = [store.publish(event(payload={"same": True})) for _ in range(3)]
    assert len({r.event_id for r in results}) == 3
    assert not any(r.duplicate for r in results)


def test_a_chain_past_its_budget_stores_the_next_event_blocked_and_undispatched(
    make_store: Callable[..., EventStore], client: redis.Redis, prefix: str
) -> None:
    store = make_store(chain_budget=3)
    within = [store.publish(event(correlation_id="chain-1"), notify=True) for _ in range(3)]
    other = store.publish(event(correlation_id="chain-2"), notify=True)
    over = store.publish(event(correlation_id="chain-1"), notify=True)

    reason = "its chain (correlation id) holds 4 events, over its budget of 3"
    assert over.blocked == reason
    assert not any(p.blocked for p in within) and not other.blocked
    record = store.get(over.event_id)
    assert (record.status, record.blocked) == ("blocked", reason)
    pending = set(store.pending(older_than=-60))  # every pending event, however new
    queued = set(client.lrange(Keys(prefix).dispatch, 0, -1))
    assert {p.event_id for p in [*within, other]} <= pending & queued
    assert over.event_id not in pending | queued
    assert {store.get(p.event_id).status for p in [*within, other]} == {"pending"}


# -- size limit and atomicity ------------------------------------------------------------------


def test_a_payload_over_the_limit_is_refused_and_nothing_is_written(
    make_store: Callable[..., EventStore], client: redis.Redis, prefix: str
) -> None:
    store = make_store(max_payload_bytes=100)
    store.publish(event(payload="x" * 98))  # 100 bytes of JSON with its quotes: accepted
    before = footprint(client, prefix)
    with pytest.raises(InvalidInput) as caught:
        store.publish(event(payload="x" * 99, dedupe_key="big"))
    assert (caught.value.field, caught.value.reason) == (
        "payload",
        "is 101 bytes, at most 100 allowed",
    )
    assert footprint(client, prefix) == before


def test_a_publish_that_fails_midway_leaves_nothing_behind(
    store: EventStore, client: redis.Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    client.set(keys.type_stream("alert.triggered"), "not a stream")
    sent = event(dedupe_key="atomic-1")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        store.publish(sent)
    assert client.exists(keys.event(sent.id)) == 0
    assert client.exists(keys.dedupe("atomic-1")) == 0
    assert client.exists(keys.stream) == 0
    assert client.exists(keys.pending) == 0
    assert footprint(client, prefix) == {keys.type_stream("alert.triggered"): ("string", 12)}


@pytest.mark.parametrize("wrong_key", ["stream", "pending", "dedupe"])
def test_any_key_of_the_wrong_type_refuses_the_whole_publish(
    store: EventStore, client: redis.Redis, prefix: str, wrong_key: str
) -> None:
    keys = Keys(prefix)
    store.publish(event("other.type"))
    target = {"stream": keys.stream, "pending": keys.pending, "dedupe": keys.dedupe("d")}[wrong_key]
    client.delete(target)
    client.hset(target, "wrong", "type")
    before = footprint(client, prefix)
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        store.publish(event(dedupe_key="d"))
    assert footprint(client, prefix) == before


# -- history -----------------------------------------------------------------------------------


def publish_series(store: EventStore, types: list[str]) -> list[tuple[Event, datetime]]:
    """Publish one event per type, each in its own millisecond; with the time just after it."""
    series = []
    for event_type in types:
        sent = event(event_type)
        store.publish(sent)
        pause()
        series.append((sent, datetime.now(UTC)))
        pause()
    return series


def ids(stored: list[Any]) -> list[str]:
    return [s.event.id for s in stored]


def test_history_is_newest_first_by_default_and_oldest_first_on_request(
    store: EventStore,
) -> None:
    series = publish_series(store, ["a.one", "b.two", "a.one"])
    sent = [e.id for e, _ in series]
    assert ids(store.history()) == sent[::-1]
    assert ids(store.history(newest_first=False)) == sent


def test_history_filters_by_type(store: EventStore) -> None:
    series = publish_series(store, ["a.one", "b.two", "a.one", "b.two"])
    assert ids(store.history("a.one")) == [series[2][0].id, series[0][0].id]
    assert ids(store.history("b.two", newest_first=False)) == [series[1][0].id, series[3][0].id]
    assert store.history("c.none") == []


def test_history_limit_keeps_the_newest_or_the_oldest(store: EventStore) -> None:
    sent = [e.id for e, _ in publish_series(store, ["a.one"] * 5)]
    assert ids(store.history(limit=2)) == [sent[4], sent[3]]
    assert ids(store.history(limit=2, newest_first=False)) == [sent[0], sent[1]]


@pytest.mark.parametrize("limit", [0, -1, 10_001])
def test_history_refuses_a_limit_out_of_range(store: EventStore, limit: int) -> None:
    with pytest.raises(InvalidInput) as caught:
        store.history(limit=limit)
    assert caught.value.field == "limit"


def test_history_since_and_until_bound_the_window(store: EventStore) -> None:
    series = publish_series(store, ["a.one", "a.one", "a.one", "a.one"])
    sent = [e.id for e, _ in series]
    after_first, after_second, after_third = (t for _, t in series[:3])

    assert ids(store.history(since=after_first, newest_first=False)) == sent[1:]
    assert ids(store.history(until=after_second, newest_first=False)) == sent[:2]
    assert ids(store.history(since=after_first, until=after_third)) == [sent[2], sent[1]]
    assert ids(store.history("a.one", since=after_second, newest_first=False)) == sent[2:]
    assert store.history(since=datetime.now(UTC)) == []


def test_history_bounds_are_inclusive_to_the_millisecond_of_the_event(store: EventStore) -> None:
    sent = published(store)
    millis = int(store.get(sent.id).stream_id.split("-")[0])
    exact = datetime.fromtimestamp(millis // 1000, UTC).replace(microsecond=millis % 1000 * 1000)
    assert ids(store.history(since=exact, until=exact)) == [sent.id]


def test_history_refuses_a_malformed_stream_id_bound(store: EventStore) -> None:
    with pytest.raises(InvalidInput) as caught:
        store.history(since="not-an-id")
    assert caught.value.field == "since/until"


def test_scanning_reads_every_event_oldest_first_in_batches(store: EventStore) -> None:
    published = [store.publish(event()) for _ in range(7)]
    sent = [(p.stream_id, p.event_id) for p in published]
    assert [(s, e.id) for s, e in store.scan_events(batch=3)] == sent
    assert [(s, e.id) for s, e in store.scan_events("alert.triggered", batch=2)] == sent


# -- retention ---------------------------------------------------------------------------------


def test_retention_keeps_the_newest_events_and_deletes_older_records(
    make_store: Callable[..., EventStore], client: redis.Redis, prefix: str
) -> None:
    store = make_store(stream_maxlen=5)
    sent = [store.publish(event()).event_id for _ in range(8)]
    keys = Keys(prefix)

    assert ids(store.history()) == sent[:2:-1]
    assert ids(store.history("alert.triggered", newest_first=False)) == sent[3:]
    assert client.xlen(keys.stream) == 5
    assert client.xlen(keys.type_stream("alert.triggered")) == 5
    for dropped in sent[:3]:
        assert client.exists(keys.event(dropped), keys.deliveries(dropped)) == 0
        assert client.zscore(keys.pending, dropped) is None
    assert client.zcard(keys.pending) == 5
    assert store.get_many(sent[:3]) == []


def test_retention_trims_the_type_streams_of_every_dropped_event(
    make_store: Callable[..., EventStore], client: redis.Redis, prefix: str
) -> None:
    store = make_store(stream_maxlen=3)
    rare = [store.publish(event("rare.kind")).event_id for _ in range(2)]
    store.publish(event("busy.kind"))
    store.publish(event("busy.kind"))  # drops the first rare event
    keys = Keys(prefix)

    assert client.xlen(keys.type_stream("rare.kind")) == 1
    assert ids(store.history("rare.kind", limit=1, newest_first=False)) == [rare[1]]
    assert ids(store.history("rare.kind")) == [rare[1]]


def test_retention_drops_delivery_records_with_the_event(
    make_store: Callable[..., EventStore], client: redis.Redis, prefix: str
) -> None:
    store = make_store(stream_maxlen=1)
    first = store.publish(event()).event_id
    queue(Deliveries(store), first, "worker")
    store.publish(event())
    assert client.exists(Keys(prefix).deliveries(first)) == 0


# -- deliveries and the event's status ---------------------------------------------------------


def test_mark_dispatched_clears_pending_and_may_set_a_status(
    store: EventStore, client: redis.Redis, prefix: str
) -> None:
    sent = published(store)
    store.mark_dispatched_many([(sent.id, "unrouted")], "no route matches")
    assert client.zscore(Keys(prefix).pending, sent.id) is None
    assert store.get(sent.id).status == "unrouted"


def test_a_sent_delivery_is_cleared_only_while_still_queued_for_its_task(
    store: EventStore,
) -> None:
    sent, started, moved = published(store), published(store), published(store)
    steps = Deliveries(store)
    for event in (sent, started, moved):
        queue(steps, event.id, "h", enqueue_failed=True)
    start(steps, started.id, "h")
    queue(steps, moved.id, "h", "t2", enqueue_failed=True, only_unsent=True)  # swept

    store.mark_dispatched_many([], sent=[(e.id, "h", "t1") for e in (sent, started, moved)])

    flags = [store.get(e.id).deliveries["h"]["enqueue_failed"] for e in (sent, started, moved)]
    assert flags == [False, False, True]
    assert [store.get(e.id).deliveries["h"]["status"] for e in (sent, started)] == [
        "queued",
        "running",
    ]


def test_an_event_with_a_delivery_not_known_sent_stays_pending_when_dispatched(
    store: EventStore,
) -> None:
    sent = published(store)
    queue(Deliveries(store), sent.id, "h", enqueue_failed=True)

    store.mark_dispatched_many([(sent.id, None)])
    assert sent.id in store.pending(older_than=0)

    store.mark_dispatched_many([(sent.id, None)], sent=[(sent.id, "h", "t1")])
    assert sent.id not in store.pending(older_than=0)


def test_an_event_marked_pending_gets_its_derived_status_back_once_dispatched(
    store: EventStore,
) -> None:
    sent = published(store)
    steps = Deliveries(store)
    queue(steps, sent.id, "h")
    start(steps, sent.id, "h")
    finish(steps, sent.id, "h", Status.SUCCEEDED)
    store.mark_undispatched(sent.id, "dispatch failed")
    assert store.get(sent.id).status == "pending"

    store.mark_dispatched_many([(sent.id, None)])

    assert store.get(sent.id).status == "succeeded"
    store.acknowledge(sent.id, "ignored")
    store.mark_dispatched_many([(sent.id, None)])
    assert store.get(sent.id).status == "ignored"


def test_taking_a_batch_reads_the_events_still_waiting_and_the_subscriptions_at_once(
    store: EventStore, client: redis.Redis
) -> None:
    waiting, dispatched = published(store), published(store)
    queue(Deliveries(store), dispatched.id, "h")
    store.mark_dispatched_many([(dispatched.id, None)])
    client.rpush(store.keys.dispatch, dispatched.id, "no-such-event", waiting.id)
    client.hset(store.keys.subscriptions, "a.* h", '{"pattern": "a.*", "handler": "h"}')

    taken = store.take_dispatch(10, wait=0.1, block=False)

    assert taken.ids == [dispatched.id, "no-such-event", waiting.id]
    assert taken.pending == [waiting]
    assert taken.subscriptions == ['{"pattern": "a.*", "handler": "h"}']
    assert store.take_dispatch(10, wait=0.1, block=False) == Taken()


def test_many_events_are_marked_dispatched_together(
    store: EventStore, client: redis.Redis, prefix: str
) -> None:
    routed, unrouted = published(store), published(store)
    store.mark_dispatched_many(
        [(routed.id, None), (unrouted.id, "unrouted"), ("no-such-event", None)], "no route matches"
    )
    assert client.zcard(Keys(prefix).pending) == 0
    assert store.get(routed.id).status == "pending"  # its deliveries will say
    assert (store.get(unrouted.id).status, store.get(unrouted.id).event.id) == (
        "unrouted",
        unrouted.id,
    )
    assert not client.exists(Keys(prefix).event("no-such-event"))


# -- acknowledge -------------------------------------------------------------------------------


def test_acknowledge_sets_the_status_by_hand_and_returns_the_previous_one(
    store: EventStore, client: redis.Redis, prefix: str
) -> None:
    sent = published(store)
    assert store.acknowledge(sent.id, "ignored", "noise") == "pending"
    stored = store.get(sent.id)
    assert stored.status == "ignored"
    assert stored.acknowledged is not None
    assert (stored.acknowledged["status"], stored.acknowledged["reason"]) == ("ignored", "noise")
    assert stored.as_dict()["acknowledged"]["at"].endswith("Z")
    assert client.zscore(Keys(prefix).pending, sent.id) is None
    assert store.acknowledge(sent.id) == "ignored"
    assert store.get(sent.id).status == "processed"


def test_an_acknowledged_status_stays_when_a_delivery_changes_afterwards(
    store: EventStore,
) -> None:
    sent = published(store)
    steps = Deliveries(store)
    queue(steps, sent.id, "h")
    start(steps, sent.id, "h")
    store.acknowledge(sent.id, "processed")
    applied = finish(steps, sent.id, "h", Status.DEAD, "gave up")
    assert (applied.event_status, applied.ok) == ("processed", True)
    stored = store.get(sent.id)
    assert stored.status == "processed"
    assert stored.deliveries["h"]["status"] == "dead"


@pytest.mark.parametrize("status", ACK_STATUSES)
def test_every_acknowledge_status_is_accepted(store: EventStore, status: str) -> None:
    sent = published(store)
    store.acknowledge(sent.id, status)
    assert store.get(sent.id).status == status


def test_acknowledging_an_unknown_event_is_not_found_and_creates_nothing(
    store: EventStore, client: redis.Redis, prefix: str
) -> None:
    with pytest.raises(NotFound) as caught:
        store.acknowledge("no-such-event")
    assert caught.value.field == "event_id"
    assert footprint(client, prefix) == {}


def test_acknowledging_with_an_unknown_status_is_invalid_input(store: EventStore) -> None:
    sent = published(store)
    with pytest.raises(InvalidInput) as caught:
        store.acknowledge(sent.id, "done")
    assert caught.value.field == "status"
    assert not isinstance(caught.value, NotFound)
    assert "processed" in caught.value.reason
    assert store.get(sent.id).status == "pending"


# -- the outbox: pending events and claims -----------------------------------------------------


def test_pending_lists_events_older_than_the_grace_period(store: EventStore) -> None:
    sent = published(store)
    assert store.pending(older_than=3600) == []
    assert store.pending(older_than=0) == [sent.id]


def test_of_two_claims_on_a_pending_event_only_one_wins(
    make_store: Callable[..., EventStore], store: EventStore
) -> None:
    sent = published(store)
    other_sweeper = make_store()
    assert [store.claim_pending(sent.id, lease=60), other_sweeper.claim_pending(sent.id, 60)] == [
        True,
        False,
    ]
    assert store.pending(older_than=0) == []  # leased into the future


def test_racing_claims_from_threads_have_exactly_one_winner(
    store: EventStore, make_store: Callable[..., EventStore]
) -> None:
    sent = published(store)
    sweepers = [make_store() for _ in range(8)]
    results: list[bool] = []
    barrier = threading.Barrier(len(sweepers))

    def claim(sweeper: EventStore) -> None:
        barrier.wait()
        results.append(sweeper.claim_pending(sent.id, lease=60))

    threads = [threading.Thread(target=claim, args=(s,)) for s in sweepers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]


def test_a_claim_on_an_event_not_pending_fails(store: EventStore) -> None:
    sent = published(store)
    store.mark_dispatched_many([(sent.id, None)])
    assert store.claim_pending(sent.id, lease=60) is False
    assert store.claim_pending("no-such-event", lease=60) is False


# -- durability and availability ---------------------------------------------------------------


def test_events_survive_a_restart_of_the_redis_server(
    private_server: RedisServer, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(redis_url=private_server.url)
    client = redis.Redis.from_url(private_server.url, decode_responses=True)
    try:
        store = EventStore(client, settings)
        sent = event(payload={"kept": True}, dedupe_key="restart-1")
        store.publish(sent)
        queue(Deliveries(store), sent.id, "h")
        store.acknowledge(sent.id, "processed")

        private_server.restart()

        stored = store.get(sent.id)
        assert stored.event == sent
        assert stored.status == "processed"
        assert stored.deliveries["h"]["status"] == "queued"
        assert ids(store.history()) == [sent.id]
        assert store.publish(event(dedupe_key="restart-1")).duplicate is True
        assert (private_server.folder / "appendonly.aof").stat().st_size > 0
    finally:
        client.close()


def test_an_unreachable_redis_is_store_unavailable(make_settings: Callable[..., Settings]) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    client = redis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=1)
    store = EventStore(client, make_settings(redis_url=url))
    sent = event()
    calls: list[Callable[[], Any]] = [
        lambda: store.publish(sent),
        lambda: store.get(sent.id),
        lambda: store.history(),
        lambda: list(store.scan_events()),
        lambda: Deliveries(store).get(sent.id, "h"),
        lambda: queue(Deliveries(store), sent.id, "h"),
        lambda: store.acknowledge(sent.id),
        lambda: store.mark_dispatched_many([(sent.id, None)]),
        lambda: store.pending(older_than=0),
        lambda: store.claim_pending(sent.id, lease=1),
    ]
    for call in calls:
        with pytest.raises(StoreUnavailable, match="unreachable"):
            call()


# -- throughput --------------------------------------------------------------------------------


class CountingConnection(redis.Connection):
    """A redis-py connection that counts what it sends: one count a round trip."""

    sent = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sent += 1
        super().send_packed_command(command, check_health)


def commands_called_by(script: Path) -> set[str]:
    return {name.lower() for name in re.findall(r"redis\.call\('(\w+)'", script.read_text())}


def test_publishing_takes_one_round_trip_per_event(
    private_server: RedisServer, make_settings: Callable[..., Settings]
) -> None:
    count = 1_000
    client = redis.Redis.from_url(
        private_server.url, decode_responses=True, connection_class=CountingConnection
    )
    try:
        store = EventStore(client, make_settings(redis_url=private_server.url))
        store.publish(event())  # loads the script, so every later call is one EVALSHA
        events = [event(payload={"n": n}) for n in range(count)]
        before = client.info("commandstats")

        sent_before = CountingConnection.sent
        started = time.perf_counter()
        for sent in events:
            store.publish(sent)
        elapsed = time.perf_counter() - started
        round_trips = CountingConnection.sent - sent_before

        after = client.info("commandstats")
        grown = {
            name.removeprefix("cmdstat_"): after[name]["calls"]
            - before.get(name, {"calls": 0})["calls"]
            for name in after
        }
        grown = {name: calls for name, calls in grown.items() if calls}
        assert round_trips == count
        assert grown.pop("evalsha") == count
        assert grown.pop("info") == 1
        # What else ran, ran inside the script: the client sent nothing but EVALSHA.
        assert set(grown) <= commands_called_by(LUA / "publish.lua")
        assert client.xlen(Keys(store.settings.prefix).stream) == count + 1
    finally:
        client.close()
    print(f"\npublished {count} events in {elapsed:.2f} s: {count / elapsed:,.0f} events/s")
