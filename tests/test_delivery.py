"""Deliveries through real Celery workers: retries, dead letters, isolation, replay."""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kombu.exceptions import OperationalError

from eda.core import Core
from eda.delivery import Status
from eda.event import Event
from eda.settings import Settings
from tasks import app
from tasks.enqueue import CeleryEnqueuer
from tests.brokers import Broker
from tests.conftest import RedisServer, TaskEvents, settled, wait_for
from tests.handlers import attempts
from tests.lifecycle import finish, queue, start
from tests.redis_cost import cost
from tests.workers import ROOT, Worker

ROUTES = ROOT / "tests" / "routes.yaml"

pytestmark = [pytest.mark.timeout(60), pytest.mark.brokers]


def delivery(core: Core, event_id: str, handler: str) -> dict[str, Any]:
    return core.get_event(event_id).deliveries.get(handler, {})


def statuses(record: dict[str, Any]) -> list[str]:
    return [change["status"] for change in record["history"]]


def test_a_retry_is_sent_with_its_events_type(
    live: Core, unique_type: Any, task_events: TaskEvents
) -> None:
    # The type says whether the event's routes give the delivery flow control: without it
    # the retry would pass the handler's gate (a round trip and a parse of the event).
    event_type = unique_type()
    live.subscribe([event_type], "tests.handlers:flaky")
    event_id = live.publish(event_type, {"fail_times": 1}, "test").event_id

    record = settled(live, event_id, "tests.handlers:flaky", "succeeded")

    task_id = record["task_id"]
    wait_for(lambda: task_events.sent.get(task_id) == 2)  # the dispatch, and the retry
    assert f"'event_type': '{event_type}'" in task_events.kwargs[task_id]


def test_the_worker_leaves_what_its_start_made_out_of_full_collections(
    live: Core, unique_type: Any
) -> None:
    # A full collection walked every object of Celery, kombu and the core, with every
    # pool thread stopped: the tail of the latency from webhook to handler.
    event_type = unique_type()
    live.subscribe([event_type], "tests.handlers:reports_the_frozen")
    event_id = live.publish(event_type, {}, "test").event_id

    record = settled(live, event_id, "tests.handlers:reports_the_frozen", "succeeded")

    assert record["outcome"]["frozen"] > 50_000


def test_transient_failures_are_retried_with_backoff_until_success(
    live: Core, unique_type: Any, client: Any
) -> None:
    event_type = unique_type()
    live.subscribe([event_type], "tests.handlers:flaky")
    event_id = live.publish(event_type, {"fail_times": 2}, "test").event_id

    record = settled(live, event_id, "tests.handlers:flaky", "succeeded")

    assert statuses(record) == [
        "queued",
        "running",
        "retrying",
        "running",
        "retrying",
        "running",
        "succeeded",
    ]
    assert record["attempts"] == 3
    assert record["outcome"] == {"attempt": 3}
    (run,) = record["runs"]
    assert [(a["number"], a["status"]) for a in run["attempts"]] == [
        (1, "retrying"),
        (2, "retrying"),
        (3, "succeeded"),
    ]
    for number, attempt in enumerate(run["attempts"][:2], start=1):
        assert attempt["error"]["class"] == "eda.errors.TransientError"
        assert attempt["error"]["message"] == f"transient failure on attempt {number}"
        assert "TransientError" in attempt["error"]["traceback"]
        assert attempt["worker"] and attempt["duration_ms"] >= 0
    assert run["attempts"][2]["outcome"] == {"attempt": 3}
    started = attempts(client, event_id, "flaky")
    gaps = [b - a for a, b in itertools.pairwise(started)]
    # base 0.05 s: the first wait is at most 0.05 s, the second at most 0.1 s (plus overhead)
    assert len(gaps) == 2
    assert gaps[0] <= 0.05 + 0.5 and gaps[1] <= 0.1 + 0.5
    assert live.get_event(event_id).status == "succeeded"


def test_an_unclassified_exception_counts_as_transient(live: Core, unique_type: Any) -> None:
    event_type = unique_type()
    live.subscribe([event_type], "tests.handlers:flaky")
    event_id = live.publish(event_type, {"fail_times": 1, "mode": "plain"}, "test").event_id
    record = settled(live, event_id, "tests.handlers:flaky", "succeeded")
    assert record["attempts"] == 2


def test_a_permanent_error_goes_to_the_dead_letter_queue_after_one_attempt(
    live: Core, unique_type: Any, client: Any
) -> None:
    event_type = unique_type()
    live.subscribe([event_type], "tests.handlers:flaky")
    event_id = live.publish(event_type, {"fail_times": 5, "mode": "permanent"}, "test").event_id

    record = settled(live, event_id, "tests.handlers:flaky", "dead")

    assert statuses(record) == ["queued", "running", "dead"]
    assert len(attempts(client, event_id, "flaky")) == 1
    letter = live.dead_letter(f"{event_id}:tests.handlers:flaky")
    assert letter.error_class == "eda.errors.PermanentError"
    assert letter.error == "permanent failure on attempt 1"
    assert "Traceback" in letter.traceback and "PermanentError" in letter.traceback
    assert letter.attempts == 1 and letter.event_type == event_type
    assert letter.first_failure_at <= letter.last_failure_at
    assert live.get_event(event_id).status == "failed"


def test_exhausted_retries_dead_letter_and_a_retry_after_the_fix_succeeds(
    live: Core, unique_type: Any, client: Any
) -> None:
    event_type = unique_type()
    live.subscribe([event_type], "tests.handlers:fixable")
    event_id = uuid.uuid4().hex
    client.set(f"test-broken:{event_id}", "1")
    published = live.publish(event_type, {}, "test", id=event_id)

    record = settled(live, published.event_id, "tests.handlers:fixable", "dead")

    made = attempts(client, published.event_id, "fixable")
    assert record["attempts"] == live.settings.max_retries + 1 == len(made)
    letter_id = f"{published.event_id}:tests.handlers:fixable"
    assert live.dead_letter(letter_id).attempts == live.settings.max_retries + 1

    client.delete(f"test-broken:{published.event_id}")
    live.retry_dead_letter(letter_id)

    record = settled(live, published.event_id, "tests.handlers:fixable", "succeeded")
    assert record["replay"] is False
    assert live.dead_letter_list(handler="tests.handlers:fixable", event_type=event_type) == []
    assert "retried from the dead-letter queue" in [c["reason"] for c in record["history"]]


def test_one_failing_handler_never_reruns_another(
    live: Core, unique_type: Any, client: Any, task_events: TaskEvents
) -> None:
    event_type = unique_type()
    live.subscribe([event_type], "tests.handlers:succeed")
    live.subscribe([event_type], "tests.handlers:fail")
    event_id = live.publish(event_type, {}, "test").event_id

    settled(live, event_id, "tests.handlers:fail", "dead")
    settled(live, event_id, "tests.handlers:succeed", "succeeded")
    live.retry_event(event_id)
    settled(live, event_id, "tests.handlers:fail", "dead")
    # every task sent for it has run to its end: none runs it again
    wait_for(lambda: task_events.settled(event_id))

    assert len(attempts(client, event_id, "succeed")) == 1
    assert len(attempts(client, event_id, "fail")) == 2
    deliveries = live.get_event(event_id).deliveries
    assert (
        deliveries["tests.handlers:succeed"]["task_id"]
        != deliveries["tests.handlers:fail"]["task_id"]
    )


def test_an_event_no_handler_matches_is_recorded_unrouted(live: Core, unique_type: Any) -> None:
    event_id = live.publish(unique_type(), {}, "test").event_id
    stored = live.get_event(event_id)
    assert stored.status == "unrouted" and stored.deliveries == {}
    assert event_id not in live.store.pending(older_than=0)


def test_route_conditions_skip_visibly_and_declared_exceptions_are_permanent(
    live: Core, unique_type: Any, client: Any
) -> None:
    event_type = f"testroute.{unique_type().replace('.', '_')}"
    event_id = live.publish(event_type, {"severity": "low"}, "test").event_id

    skipped = settled(live, event_id, "tests.handlers:succeed", "skipped")
    dead = settled(live, event_id, "tests.handlers:reject_key_error", "dead")

    assert "severity in ['critical', 'high']" in skipped["history"][-1]["reason"]
    assert attempts(client, event_id, "succeed") == []
    assert len(attempts(client, event_id, "reject_key_error")) == 1
    assert dead["history"][-1]["reason"].startswith("permanent error: KeyError")


def test_a_redelivered_task_whose_delivery_succeeded_does_nothing(
    live: Core, unique_type: Any, client: Any, task_events: TaskEvents
) -> None:
    event_type = unique_type()
    live.subscribe([event_type], "tests.handlers:succeed")
    published = live.publish(event_type, {}, "test")
    settled(live, published.event_id, "tests.handlers:succeed", "succeeded")
    event = live.get_event(published.event_id).event
    assert live.enqueuer is not None

    live.enqueuer.deliver(event, "tests.handlers:succeed", "a-redelivered-task")
    wait_for(lambda: task_events.settled(published.event_id))  # its run ended

    assert len(attempts(client, published.event_id, "succeed")) == 1
    record = delivery(live, published.event_id, "tests.handlers:succeed")
    assert statuses(record) == ["queued", "running", "succeeded"]


def test_replay_redispatches_a_window_of_events_and_dry_run_enqueues_nothing(
    live: Core, unique_type: Any, client: Any, task_events: TaskEvents
) -> None:
    from datetime import UTC, datetime, timedelta

    event_type = unique_type()
    live.subscribe([event_type], "tests.handlers:succeed")
    before = datetime.now(UTC) - timedelta(seconds=1)
    ids = [live.publish(event_type, {"n": n}, "test").event_id for n in range(5)]
    for event_id in ids:
        settled(live, event_id, "tests.handlers:succeed", "succeeded")
    after = datetime.now(UTC) + timedelta(seconds=1)

    dry = live.replay(event_type, since=before, until=after, dry_run=True)
    assert dry.events == 5 and dry.deliveries == 5
    wait_for(lambda: all(task_events.settled(i) for i in ids))  # whatever was sent ran
    assert all(len(attempts(client, i, "succeed")) == 1 for i in ids)

    report = live.replay(event_type, since=before, until=after)

    assert report.events == 5 and report.deliveries == 5 and not report.dry_run
    wait_for(lambda: all(len(attempts(client, i, "succeed")) == 2 for i in ids))
    for event_id in ids:
        record = settled(live, event_id, "tests.handlers:succeed", "succeeded")
        assert record["replay"] is True
    assert live.replay(event_type, until=before).events == 0


def test_a_replay_in_batches_runs_each_delivery_once_more_in_a_run_of_its_own(
    live: Core, unique_type: Any, client: Any
) -> None:
    event_type = unique_type()
    live.subscribe([event_type], "tests.handlers:succeed")
    ids = [live.publish(event_type, {"n": n}, "test").event_id for n in range(30)]
    for event_id in ids:
        settled(live, event_id, "tests.handlers:succeed", "succeeded")

    report = live.replay(event_type)  # at 200 a second: batches of 20

    assert report.deliveries == 30
    assert [item["event_id"] for item in report.items] == ids
    wait_for(lambda: all(len(attempts(client, i, "succeed")) == 2 for i in ids))
    for event_id in ids:
        record = settled(live, event_id, "tests.handlers:succeed", "succeeded")
        assert [(r["number"], r["replay"]) for r in record["runs"]] == [(1, False), (2, True)]
    # Every second run is recorded as ended: a third would have been recorded as queued.
    assert all(len(attempts(client, i, "succeed")) == 2 for i in ids)


def test_a_replay_the_broker_refuses_leaves_every_delivery_as_it_was(
    core: Core, refusing_broker: str
) -> None:
    nowhere = CeleryEnqueuer(app, broker_url=refusing_broker)
    refused = Core(core.settings, core.redis, nowhere)
    events = [Event.create(type="a.b", source="test") for _ in range(5)]
    for event in events:
        refused.store.publish(event)
        queue(refused.deliveries, event.id, "h")
        start(refused.deliveries, event.id, "h")
        finish(refused.deliveries, event.id, "h", Status.SUCCEEDED)

    with pytest.raises(OperationalError):
        refused.replay("a.b", handler="h")

    for event in events:
        record = refused.get_event(event.id).deliveries["h"]
        assert (record["status"], len(record["runs"])) == ("succeeded", 2)
        assert record["history"][-1]["reason"].startswith("could not enqueue")


@pytest.mark.redis_broker
def test_a_replay_costs_redis_a_few_round_trips_whatever_the_deliveries(
    make_settings: Any, own_redis: tuple[RedisServer, Any]
) -> None:
    """Counted by the server, store and broker together: the window read, the new runs
    recorded, the bindings read, the messages sent in pipelines of 50. One delivery at a
    time, 40 deliveries cost 120 round trips."""
    server, counter = own_redis
    broker = server.url.rsplit("/", 1)[0] + "/1"
    settings = make_settings(redis_url=server.url, replay_rate=1e6)  # one batch, unpaced
    replaying = Core(settings, None, CeleryEnqueuer(app, broker))
    events = [Event.create(type="a.b", source="test") for _ in range(40)]
    for event in events:
        replaying.store.publish(event)
    for _ in range(2):  # the first replays load the scripts, bind the type, connect
        replaying.replay("a.b", handler="h", limit=1)

    with cost(counter) as spent:
        report = replaying.replay("a.b", handler="h")

    assert report.deliveries == 40
    assert spent.reads <= 25, spent
    assert spent.of("smembers") == 1, spent
    runs = [len(replaying.get_event(e.id).deliveries["h"]["runs"]) for e in events]
    assert runs == [3] + [1] * 39


def test_dispatching_an_event_twice_enqueues_each_delivery_once(
    live: Core, unique_type: Any, client: Any, task_events: TaskEvents
) -> None:
    event_type = unique_type()
    live.subscribe([event_type], "tests.handlers:succeed")
    published = live.publish(event_type, {}, "test")
    event = live.get_event(published.event_id).event

    live.dispatch(event)  # a sweeper racing the publisher, say
    settled(live, published.event_id, "tests.handlers:succeed", "succeeded")
    # every task sent for it has run to its end: none runs it again
    wait_for(lambda: task_events.settled(published.event_id))

    assert len(attempts(client, published.event_id, "succeed")) == 1


class BrokerRefusingOnce(CeleryEnqueuer):
    """The real enqueuer, with the broker going away once, mid-batch, before one handler's."""

    def __init__(self, refuse: str) -> None:
        super().__init__(app)
        self.refuse = refuse

    def deliver_many(
        self, deliveries: list[tuple[Event, str, str]], *, replay: bool = False
    ) -> None:
        if self.refuse in (handler for _, handler, _ in deliveries):
            refused, self.refuse = self.refuse, ""
            super().deliver_many([d for d in deliveries if d[1] != refused])
            raise ConnectionError("the broker went away")
        super().deliver_many(deliveries, replay=replay)


def test_a_partial_dispatch_is_finished_by_the_sweeper_without_running_anything_twice(
    live: Core, live_settings: Settings, client: Any, unique_type: Any, task_events: TaskEvents
) -> None:
    flaky = Core(live_settings, client, BrokerRefusingOnce("tests.handlers:flaky"), live.routes)
    event_type = unique_type()
    flaky.subscribe([event_type], "tests.handlers:succeed")
    flaky.subscribe([event_type], "tests.handlers:flaky")

    event_id = flaky.publish(event_type, {}, "test").event_id

    assert event_id in flaky.store.pending(older_than=0)  # left to the sweeper
    refused = delivery(flaky, event_id, "tests.handlers:flaky")
    assert refused["enqueue_failed"] is True
    settled(live, event_id, "tests.handlers:succeed", "succeeded")
    wait_for(lambda: event_id in flaky.store.pending(older_than=live_settings.outbox_grace))
    assert flaky.sweep() >= 1  # (the session's prefix may hold others)
    settled(live, event_id, "tests.handlers:flaky", "succeeded")
    # every task sent for it has run to its end: none runs it again
    wait_for(lambda: task_events.settled(event_id))
    assert len(attempts(client, event_id, "succeed")) == 1
    assert len(attempts(client, event_id, "flaky")) == 1


def test_a_delivery_whose_worker_keeps_dying_is_dead_lettered(
    live: Core, unique_type: Any, client: Any
) -> None:
    event_type = unique_type()
    live.subscribe([event_type], "tests.handlers:succeed")
    event = Event.create(type=event_type, source="test")
    live.store.publish(event)
    queue(live.deliveries, event.id, "tests.handlers:succeed", "doomed")
    for _ in range(live.settings.max_retries + 1):  # each run's worker died mid-way
        start(live.deliveries, event.id, "tests.handlers:succeed", "doomed")
    assert live.enqueuer is not None

    live.enqueuer.deliver(event, "tests.handlers:succeed", "doomed")

    record = settled(live, event.id, "tests.handlers:succeed", "dead")
    assert "worker died" in record["history"][-1]["reason"]
    assert attempts(client, event.id, "succeed") == []
    assert live.dead_letter(f"{event.id}:tests.handlers:succeed").attempts == 1


def test_a_handler_calling_exit_is_dead_lettered_and_the_worker_lives_on(
    live: Core, unique_type: Any
) -> None:
    first, second = unique_type("first"), unique_type("second")
    live.subscribe([first], "tests.handlers:exits")
    live.subscribe([second], "tests.handlers:succeed")
    exited = live.publish(first, {}, "test").event_id

    record = settled(live, exited, "tests.handlers:exits", "dead")
    assert "exit(3)" in record["history"][-1]["reason"]
    after = live.publish(second, {}, "test").event_id
    settled(live, after, "tests.handlers:succeed", "succeeded")


@pytest.mark.parametrize(
    ("handler", "reason"),
    [
        ("eda.core:logging.setLogRecordFactory", "not an attribute path"),
        ("tests.handlers:needs_two_arguments", "cannot be called with one event"),
        ("tests.handlers:json", "not a function defined in tests.handlers"),
        ("tests.handlers:nothing_here", "cannot be imported"),
    ],
)
def test_a_subscription_naming_no_runnable_handler_is_dead_lettered_and_the_worker_lives_on(
    live: Core, unique_type: Any, client: Any, handler: str, reason: str
) -> None:
    first, second = unique_type("first"), unique_type("second")
    entry = {"pattern": first, "handler": handler, "created_at": "2026-12-03T00:00:00+00:00"}
    # Written past the API's check, as a store edited by hand or an older release holds it.
    client.hset(live.keys.subscriptions, f"{first} {handler}", json.dumps(entry))
    live.subscribe([second], "tests.handlers:succeed")
    refused = live.publish(first, {}, "test").event_id

    record = settled(live, refused, handler, "dead")
    assert statuses(record) == ["queued", "running", "dead"]
    assert reason in record["history"][-1]["reason"]
    assert live.dead_letter(f"{refused}:{handler}").error_class == "eda.errors.PermanentError"
    after = live.publish(second, {}, "test").event_id
    settled(live, after, "tests.handlers:succeed", "succeeded")


@dataclass
class Outage:
    """A slow delivery running on a worker whose event store the test stops and starts."""

    core: Core
    store: RedisServer
    worker: Worker
    event_id: str


@contextmanager
def slow_delivery_on_a_store_of_its_own(
    tmp_path: Path, broker: str, settings: Settings, env: dict[str, str]
) -> Iterator[Outage]:
    """A store of the test's own, a worker on it and ``broker`` started with ``env``, and
    one delivery of ``tests.handlers:slow`` (a second long) seen running."""
    store = RedisServer(tmp_path / "store")
    store.start()
    environment = {"REDIS_URL": store.url, "CELERY_BROKER_URL": broker, **env}
    worker = Worker(tmp_path / "worker.log", environment, name="outage")
    try:
        # The session's prefix: the broker's keys carry it too, and the worker must agree.
        private = settings.model_copy(update={"redis_url": store.url})
        core = Core(private, None, CeleryEnqueuer(app, broker))
        core.subscribe(["outage.slow"], "tests.handlers:slow")
        event_id = core.publish("outage.slow", {"seconds": 1.0}, "test").event_id
        wait_for(lambda: delivery(core, event_id, "tests.handlers:slow").get("status") == "running")
        yield Outage(core, store, worker, event_id)
    finally:
        worker.stop()
        store.stop()


def test_a_delivery_survives_the_event_store_going_away_mid_run(
    tmp_path: Path, broker_under_test: Broker, live_settings: Settings
) -> None:
    broker = broker_under_test.url(6)
    with slow_delivery_on_a_store_of_its_own(tmp_path, broker, live_settings, {}) as it:
        it.store.stop()
        # the handler finished while the store is down: its end waits for the store
        wait_for(lambda: "event store unreachable, waiting up to" in it.worker.log())
        it.store.start()

        record = wait_for(
            lambda: (
                (d := delivery(it.core, it.event_id, "tests.handlers:slow"))["status"]
                == "succeeded"
                and d
            ),
            timeout=30,
        )
        assert record["status"] == "succeeded"
        # The attempt waited for the store (EDA_STORE_WAIT) to record its end: one attempt,
        # the handler ran once, nothing was left for recovery.
        assert "left for recovery" not in it.worker.log()
        (attempt,) = record["runs"][0]["attempts"]
        assert (record["attempts"], attempt["number"], attempt["status"]) == (1, 1, "succeeded")
        assert attempt["starts"] == 1


#: A worker that gives the store half a second, and recovery that looks after half a second.
SHORT_STORE_WAIT = {
    "EDA_STORE_WAIT": "0.5",
    "EDA_RECOVERY_GRACE": "0.5",
    "EDA_HEARTBEAT_INTERVAL": "0.2",
}


def test_a_delivery_the_store_stays_away_from_past_the_wait_is_recovered_in_the_same_attempt(
    tmp_path: Path, broker_under_test: Broker, live_settings: Settings
) -> None:
    settings = live_settings.model_copy(update={"recovery_grace": 0.5, "heartbeat_interval": 0.2})
    broker = broker_under_test.url(12)
    with slow_delivery_on_a_store_of_its_own(tmp_path, broker, settings, SHORT_STORE_WAIT) as it:
        it.store.stop()  # the handler finishes, and its end cannot be recorded
        wait_for(lambda: "left for recovery" in it.worker.log(), timeout=20)
        it.store.start()

        def recovered() -> dict[str, Any]:
            it.core.recover()  # what beat's sweep does every EDA_SWEEP_INTERVAL
            record = delivery(it.core, it.event_id, "tests.handlers:slow")
            return record if record.get("status") == "succeeded" else {}

        record = wait_for(recovered, timeout=30, interval=0.2)
        # The attempt that never recorded its end ran again in place: no retry was spent.
        (run,) = record["runs"]
        (attempt,) = run["attempts"]
        assert (record["attempts"], attempt["number"], attempt["status"]) == (1, 1, "succeeded")
        assert attempt["starts"] == len(attempts(it.core.redis, it.event_id, "slow")) == 2


class BrokerThatDies(CeleryEnqueuer):
    """The real enqueuer, in a process that dies once between recording and sending."""

    def __init__(self) -> None:
        super().__init__(app)
        self.died = False

    def deliver_many(
        self, deliveries: list[tuple[Event, str, str]], *, replay: bool = False
    ) -> None:
        if not self.died:
            self.died = True
            raise SystemExit("killed")
        super().deliver_many(deliveries, replay=replay)


def test_deliveries_recorded_by_a_dispatch_that_died_are_swept_and_run_once(
    live: Core, client: Any, unique_type: Any, task_events: TaskEvents
) -> None:
    dying = Core(live.settings, client, BrokerThatDies(), live.routes)
    kind = unique_type()
    dying.subscribe([kind], "tests.handlers:succeed")
    events = [Event.create(type=kind, source="test", payload={"n": n}) for n in range(3)]
    for event in events:
        dying.store.publish(event)

    with pytest.raises(SystemExit):
        dying.dispatch_many(events)

    for event in events:
        assert delivery(dying, event.id, "tests.handlers:succeed")["enqueue_failed"] is True
    assert {e.id for e in events} <= set(dying.store.pending(older_than=0))
    swept = live.settings.model_copy(update={"outbox_grace": 0.0})
    sweeper = Core(swept, client, dying.enqueuer, live.routes)
    assert sweeper.sweep() >= 3  # (and whatever else the session's prefix left pending)
    for event in events:
        settled(live, event.id, "tests.handlers:succeed", "succeeded")
    # every task sent for it has run to its end: none runs it again
    wait_for(lambda: all(task_events.settled(e.id) for e in events))
    assert [len(attempts(client, e.id, "succeed")) for e in events] == [1, 1, 1]


def stored_for_succeed(live: Core, kind: str) -> Event:
    """An event of a type of its own, stored (not dispatched), routed to ``succeed``."""
    live.subscribe([kind], "tests.handlers:succeed")
    event = Event.create(type=kind, source="test", payload={})
    live.store.publish(event)
    return event


class SweptBeforeItSends(CeleryEnqueuer):
    """The real enqueuer; before it sends, a sweeper records the same deliveries anew
    (a dispatch lagging past the grace period) and dies before sending its own."""

    def __init__(self, sweeper: Core) -> None:
        super().__init__(app)
        self.sweeper = sweeper

    def deliver_many(
        self, deliveries: list[tuple[Event, str, str]], *, replay: bool = False
    ) -> None:
        with pytest.raises(SystemExit):
            self.sweeper.dispatch_many([event for event, _, _ in deliveries])
        super().deliver_many(deliveries, replay=replay)


def test_a_delivery_a_sweeper_took_over_and_never_sent_is_swept_again(
    live: Core, client: Any, unique_type: Any, task_events: TaskEvents
) -> None:
    event = stored_for_succeed(live, unique_type())
    dying_sweeper = Core(live.settings, client, BrokerThatDies(), live.routes)
    late = Core(live.settings, client, SweptBeforeItSends(dying_sweeper), live.routes)

    late.dispatch_many([event])  # its message is refused: the sweeper's task holds it

    assert event.id in live.store.pending(older_than=0)
    swept = live.settings.model_copy(update={"outbox_grace": 0.0})
    assert Core(swept, client, live.enqueuer, live.routes).sweep() >= 1
    settled(live, event.id, "tests.handlers:succeed", "succeeded")
    # every task sent for it has run to its end: none runs it again
    wait_for(lambda: task_events.settled(event.id))
    assert len(attempts(client, event.id, "succeed")) == 1


class BrokerFailingAfterTheWorkerRan(CeleryEnqueuer):
    """The real enqueuer: the messages go out, the worker runs them, then the batch fails."""

    def __init__(self, core: Core) -> None:
        super().__init__(app)
        self.core = core

    def deliver_many(
        self, deliveries: list[tuple[Event, str, str]], *, replay: bool = False
    ) -> None:
        super().deliver_many(deliveries, replay=replay)
        for event, handler, _ in deliveries:
            settled(self.core, event.id, handler, "succeeded")
        raise ConnectionError("the broker went away after the flush")


def test_an_event_whose_deliveries_ran_despite_a_failed_batch_is_dispatched(
    live: Core, client: Any, unique_type: Any
) -> None:
    event = stored_for_succeed(live, unique_type())
    late = Core(live.settings, client, BrokerFailingAfterTheWorkerRan(live), live.routes)

    (outcome,) = late.dispatch_many([event])

    assert not isinstance(outcome, Exception)
    stored = live.get_event(event.id)
    assert stored.status == "succeeded"
    assert stored.deliveries["tests.handlers:succeed"]["enqueue_failed"] is False
    assert event.id not in live.store.pending(older_than=0)


def test_a_delivery_record_that_cannot_be_read_fails_its_own_event_only(
    live: Core, client: Any, unique_type: Any
) -> None:
    kind = unique_type()
    live.subscribe([kind], "tests.handlers:succeed")
    events = [Event.create(type=kind, source="test", payload={"n": n}) for n in range(3)]
    for event in events:
        live.store.publish(event)
    client.hset(live.keys.deliveries(events[1].id), "tests.handlers:succeed", "{not json")

    outcomes = live.dispatch_many(events)

    assert isinstance(outcomes[1], Exception) and not isinstance(outcomes[0], Exception)
    for event in (events[0], events[2]):
        settled(live, event.id, "tests.handlers:succeed", "succeeded")
    pending = set(live.store.pending(older_than=0))
    assert events[1].id in pending and not {events[0].id, events[2].id} & pending
    shown = live.get_event(events[1].id).deliveries["tests.handlers:succeed"]
    assert shown["status"] == "unreadable"  # the faces show it, they do not fail on it
    assert live.stats()["events"][kind]  # nor does stats
    live.store.acknowledge(events[1].id, "ignored")  # no later sweep of the session trips on it


def test_a_replayed_delivery_keeps_both_runs(live: Core, unique_type: Any) -> None:
    event_type = unique_type()
    live.subscribe([event_type], "tests.handlers:succeed")
    event_id = live.publish(event_type, {}, "test").event_id
    settled(live, event_id, "tests.handlers:succeed", "succeeded")

    live.replay(event_type=event_type, handler="tests.handlers:succeed")

    record = wait_for(
        lambda: (
            (d := delivery(live, event_id, "tests.handlers:succeed"))["status"] == "succeeded"
            and len(d["runs"]) == 2
            and d
        )
    )
    assert [(r["number"], r["reason"], r["replay"]) for r in record["runs"]] == [
        (1, "dispatched", False),
        (2, "replayed", True),
    ]
    assert [r["attempts"][0]["outcome"] for r in record["runs"]] == [{"attempt": 1}, {"attempt": 2}]
    assert record["totals"]["runs"] == 2 and record["totals"]["attempts"] == 2


def test_a_route_with_its_own_retry_policy_dead_letters_after_two_attempts(
    live: Core, unique_type: Any, client: Any
) -> None:
    own, default = unique_type("own", "retryone"), unique_type("default")
    live.subscribe([default], "tests.handlers:flaky")
    payload = {"fail_times": 9}
    limited = live.publish(own, payload, "test").event_id
    unlimited = live.publish(default, payload, "test").event_id

    record = settled(live, limited, "tests.handlers:flaky", "dead")
    assert record["attempts"] == 2  # max_retries: 1 on the route
    assert live.dead_letter(f"{limited}:tests.handlers:flaky").attempts == 2
    other = settled(live, unlimited, "tests.handlers:flaky", "dead")
    assert other["attempts"] == live.settings.max_retries + 1


def test_a_handler_gets_its_delivery_id_as_idempotency_key_and_its_attempt(
    live: Core, unique_type: Any
) -> None:
    event_type = unique_type()
    live.subscribe([event_type], "tests.handlers:reports_its_delivery")
    event_id = live.publish(event_type, {"fail_times": 1}, "test").event_id

    record = settled(live, event_id, "tests.handlers:reports_its_delivery", "succeeded")

    key = f"{event_id}:tests.handlers:reports_its_delivery"
    assert record["outcome"] == {"key": key, "run": 1, "attempt": 2}
    assert "delivery" not in live.get_event(event_id).as_dict()  # never stored
