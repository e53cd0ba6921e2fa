"""What survives a crash: a killed worker's delivery; events stored while the broker was down."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from eda import flow
from eda.core import Core
from eda.delivery import Change, Status, run_attempt
from eda.event import Event
from eda.flow import Concurrency, FlowRules
from eda.recovery import stuck
from eda.settings import Settings
from tasks import app
from tasks.enqueue import CeleryEnqueuer
from tasks.sweep import sweep
from tests.brokers import Broker
from tests.conftest import TaskEvents, wait_for
from tests.handlers import attempts
from tests.lifecycle import finish, governed, queue, start
from tests.workers import Worker

pytestmark = pytest.mark.brokers

#: A worker whose unacknowledged messages come back after two seconds.
SHORT_VISIBILITY = {
    "EDA_VISIBILITY_TIMEOUT": "2",
    "EDA_TASK_TIME_LIMIT": "1.5",
    "EDA_TASK_SOFT_TIME_LIMIT": "1.2",
}


def test_a_delivery_whose_worker_is_killed_is_finished_by_another_exactly_once(
    private_broker: Any, client: Any, unique_type: Any, tmp_path: Path
) -> None:
    broker, core = private_broker(2)
    env = {"CELERY_BROKER_URL": broker, **SHORT_VISIBILITY}
    first = Worker(tmp_path / "first.log", env, name="doomed")
    event_type = unique_type()
    core.subscribe([event_type], "tests.handlers:slow")
    event_id = core.publish(event_type, {"seconds": 0.8}, "test").event_id
    wait_for(lambda: attempts(client, event_id, "slow"))

    first.kill()
    assert core.get_event(event_id).deliveries["tests.handlers:slow"]["status"] == "running"
    second = Worker(tmp_path / "second.log", env, name="rescuer")
    try:
        record = wait_for(
            lambda: (
                (d := core.get_event(event_id).deliveries["tests.handlers:slow"])["status"]
                == "succeeded"
                and d
            ),
            timeout=20,
        )
        time.sleep(0.5)
    finally:
        second.stop()

    assert len(attempts(client, event_id, "slow")) == 2
    assert [c["status"] for c in record["history"]].count("succeeded") == 1
    assert core.get_event(event_id).deliveries["tests.handlers:slow"]["status"] == "succeeded"


def test_events_stored_while_the_broker_is_down_are_swept_once_it_is_back(
    live: Core,
    live_settings: Settings,
    client: Any,
    unique_type: Any,
    refusing_broker: str,
    task_events: TaskEvents,
) -> None:
    down = refusing_broker
    offline = Core(live_settings, client, CeleryEnqueuer(app, down), live.routes)
    event_type = unique_type()
    offline.subscribe([event_type], "tests.handlers:succeed")

    event_id = offline.publish(event_type, {}, "test").event_id

    stored = offline.get_event(event_id)
    assert stored.status == "pending"
    assert event_id in offline.store.pending(older_than=0)
    wait_for(lambda: event_id in offline.store.pending(older_than=live_settings.outbox_grace))

    # the beat schedule's task, run by the live worker
    sweeps = [sweep.apply_async(queue="default").id for _ in range(2)]

    wait_for(lambda: live.get_event(event_id).status == "succeeded")
    # both sweeps, and every delivery sent for the event, have run to their end
    wait_for(lambda: task_events.ended(*sweeps) and task_events.settled(event_id))
    assert len(attempts(client, event_id, "succeed")) == 1
    assert event_id not in live.store.pending(older_than=0)
    assert live.sweep() == 0


# -- stuck deliveries ---------------------------------------------------------------------------


def _stored(core: Core) -> Event:
    event = Event.create(type="stuck.case", source="test")
    core.store.publish(event)
    return event


def test_a_delivery_is_stuck_only_past_the_grace_and_when_nobody_holds_or_queues_it(
    make_settings: Any, client: Any
) -> None:
    core = Core(make_settings(recovery_grace=0.2, heartbeat_interval=0.1), client)
    running, waiting, held, young, done = (_stored(core) for _ in range(5))
    for event, task in [(running, "r"), (waiting, "w"), (held, "h"), (young, "y"), (done, "d")]:
        queue(core.deliveries, event.id, "h", task)
    start(core.deliveries, running.id, "h", "r", worker="gone")
    start(core.deliveries, held.id, "h", "h", worker="alive")
    start(core.deliveries, done.id, "h", "d")
    finish(core.deliveries, done.id, "h", Status.SUCCEEDED, task="d")
    time.sleep(0.3)  # past the grace
    queue(core.deliveries, young.id, "h", "y2", only_unsent=False)  # a step just now
    core.liveness.beat("worker", "alive", ["h"])

    found = {item.event_id: item for item in stuck(core, waiting={"w"})}
    assert set(found) == {running.id}
    assert found[running.id].why == "its worker is gone"

    found = {item.event_id: item for item in stuck(core, waiting=set())}
    assert set(found) == {running.id, waiting.id}
    assert "in no lane" in found[waiting.id].why
    assert {item.event_id for item in stuck(core, waiting=None)} == {running.id}
    members = client.zrange(core.keys.inflight, 0, -1)
    assert f"{done.id} h" not in members  # finished deliveries leave the index

    time.sleep(0.4)  # the live worker's heartbeat expires (three intervals)
    assert held.id in {item.event_id for item in stuck(core, waiting=set())}


def test_a_parked_delivery_handed_a_slot_whose_message_never_left_is_stuck(
    settings: Settings, client: Any
) -> None:
    core = governed(settings, client, Capped=FlowRules(concurrency=Concurrency(limit=1)))
    holder, handed, parked = (_stored(core) for _ in range(3))
    assert flow.gate(core, holder, "Capped", "h", {}).go  # a running attempt holds the slot
    for event in (handed, parked):
        queue(core.deliveries, event.id, "Capped", event.id)
        assert run_attempt(core, event.id, "Capped", event.id).parked
    # The slot is handed to the oldest parked delivery, taken off the parked list, and then
    # its message is never sent (the broker refused it, or the process died right there).
    given = core.flow.release("Capped", f"{holder.id} Capped")
    assert [waiter["event_id"] for waiter in given] == [handed.id]

    later = time.time() + settings.recovery_grace + 1
    found = {item.event_id: item for item in stuck(core, waiting=set(), now=later)}

    assert set(found) == {handed.id}  # the one still parked waits for its slot
    assert found[handed.id].status is Status.WAITING
    assert found[handed.id].why == "it was handed a concurrency slot, but its message is in no lane"
    assert stuck(core, waiting={handed.id}, now=later) == []  # sent: its message waits in a lane


def _handed_a_slot(core: Core, send: bool = True) -> Event:
    """A delivery parked behind one that holds the only slot, which is then given back: the
    slot goes to it and, with ``send``, its message to the broker."""
    holder, handed = _stored(core), _stored(core)
    assert flow.gate(core, holder, "Capped", "h", {}).go
    queue(core.deliveries, handed.id, "Capped", handed.id)
    assert run_attempt(core, handed.id, "Capped", handed.id).parked
    if send:
        flow.release(core, "Capped", holder.id, "Capped")
    else:  # the store's step alone, as when the process dies before the send
        given = core.flow.release("Capped", f"{holder.id} Capped")
        assert [waiter["event_id"] for waiter in given] == [handed.id]
    return handed


def test_a_woken_delivery_whose_send_the_broker_refuses_is_recovered_on_any_broker(
    settings: Settings, client: Any, refusing_broker: str
) -> None:
    capped = FlowRules(concurrency=Concurrency(limit=1))
    core = governed(settings, client, CeleryEnqueuer(app, refusing_broker), Capped=capped)

    handed = _handed_a_slot(core)  # the broker refuses the message of the slot's new holder

    record = core.deliveries.get(handed.id, "Capped")
    assert record is not None and record.status is Status.QUEUED and record.enqueue_failed
    later = time.time() + settings.recovery_grace + 1
    lanes: tuple[set[str] | None, ...] = (None, set())  # RabbitMQ cannot list them; Redis can
    for waiting in lanes:
        found = stuck(core, waiting=waiting, now=later)
        assert [(item.event_id, item.why) for item in found] == [
            (handed.id, "its message was never sent")
        ]


def test_on_rabbitmq_a_woken_delivery_that_never_started_is_stuck_once_its_lease_ran_out(
    make_settings: Any, client: Any
) -> None:
    settings = make_settings(flow_lease=0.5)
    core = governed(settings, client, Capped=FlowRules(concurrency=Concurrency(limit=1)))
    handed = _handed_a_slot(core, send=False)

    def found() -> list[tuple[str, str]]:
        later = time.time() + settings.recovery_grace + 1
        return [(item.event_id, item.why) for item in stuck(core, waiting=None, now=later)]

    assert found() == []  # it holds the slot: on RabbitMQ its message may be waiting
    wait_for(lambda: found() != [])
    assert found() == [
        (handed.id, "it was handed a concurrency slot, and its lease ran out before it started")
    ]


def test_a_delivery_that_started_after_the_index_was_read_is_not_taken_from_its_worker(
    make_settings: Any, client: Any
) -> None:
    # A delivery queued long ago (a backlog) that a worker started a moment ago, before
    # the worker's next heartbeat lists it: the index still says "old", the record "running".
    core = Core(make_settings(recovery_grace=0.2, heartbeat_interval=10), client)
    event = _stored(core)
    queue(core.deliveries, event.id, "h", "t")
    start(core.deliveries, event.id, "h", "t", worker="busy")
    core.liveness.beat("worker", "busy", [])  # its last beat, from before the start
    client.zadd(core.keys.inflight, {f"{event.id} h": int((time.time() - 60) * 1000)})

    assert stuck(core, waiting=set()) == []


def test_recovery_sends_a_stuck_delivery_again_and_the_old_message_is_superseded(
    make_settings: Any, client: Any, unique_type: Any, idle_broker: str, broker_under_test: Broker
) -> None:
    url = idle_broker  # a prefix and a broker of this test's own: nobody else's
    core = Core(make_settings(recovery_grace=0.0), client, CeleryEnqueuer(app, url))
    event = Event.create(type=unique_type(), source="test")
    core.store.publish(event)
    queue(core.deliveries, event.id, "tests.handlers:succeed", "lost-task")
    start(core.deliveries, event.id, "tests.handlers:succeed", "lost-task", worker="killed")

    assert core.recover() == 1

    record = core.get_event(event.id).deliveries["tests.handlers:succeed"]
    assert record["status"] == "queued" and record["task_id"] != "lost-task"
    assert "recovered: its worker is gone" in record["history"][-1]["reason"]
    assert broker_under_test.waiting(url) == 1  # the new message waits in its lane
    waiting = core.enqueuer.waiting_task_ids()
    if broker_under_test.name == "redis":
        assert waiting is not None and record["task_id"] in waiting
    else:  # RabbitMQ cannot list its messages: waiting deliveries are trusted to it
        assert waiting is None
    assert core.recover() == 0  # its message waits: nothing more to do
    late = start(core.deliveries, event.id, "tests.handlers:succeed", "lost-task")
    assert late.result == "superseded"  # the old message, should it come back


def test_a_killed_workers_deliveries_resume_long_before_the_visibility_timeout(
    private_broker: Any, client: Any, unique_type: Any, tmp_path: Path
) -> None:
    broker, base = private_broker(4)
    fast = {"EDA_HEARTBEAT_INTERVAL": "0.2", "EDA_RECOVERY_GRACE": "1"}
    core = Core(
        base.settings.model_copy(update={"recovery_grace": 1.0, "heartbeat_interval": 0.2}),
        client,
        base.enqueuer,
        base.routes,
    )
    env = {"CELERY_BROKER_URL": broker, **fast}  # the default visibility timeout: an hour
    first = Worker(tmp_path / "first.log", env, name="doomed", concurrency=2)
    event_type = unique_type()
    core.subscribe([event_type], "tests.handlers:slow")
    ids = [core.publish(event_type, {"seconds": 0.6}, "test").event_id for _ in range(6)]
    wait_for(lambda: sum(bool(attempts(client, i, "slow")) for i in ids) >= 2)
    first.kill()
    second = Worker(tmp_path / "second.log", env, name="rescuer", concurrency=2)
    try:

        def settled() -> bool:
            core.recover()  # what beat's sweep does every EDA_SWEEP_INTERVAL
            statuses = [core.get_event(i).deliveries["tests.handlers:slow"]["status"] for i in ids]
            return all(status == "succeeded" for status in statuses)

        wait_for(settled, timeout=40, interval=0.3)
        runs = [len(attempts(client, i, "slow")) for i in ids]
        assert all(count in (1, 2) for count in runs)  # at least once; twice only if cut off
        assert sum(count == 2 for count in runs) <= 2  # at most the two it was running
        assert client.zcard(core.keys.inflight) == 0 or all(
            f"{i} tests.handlers:slow" not in client.zrange(core.keys.inflight, 0, -1) for i in ids
        )
    finally:
        second.stop()


def test_recovery_leaves_a_delivery_a_live_worker_started_again_since_it_was_found(
    make_settings: Any, client: Any, unique_type: Any
) -> None:
    """RabbitMQ hands a dead worker's message to another at once, under the same task id: a
    recovery pass that found the delivery stuck just before must not take it over."""
    core = Core(make_settings(recovery_grace=0.0), client)
    event = Event.create(type=unique_type(), source="test")
    core.store.publish(event)
    queue(core.deliveries, event.id, "tests.handlers:succeed", "the-task")
    start(core.deliveries, event.id, "tests.handlers:succeed", "the-task", worker="killed")
    (found,) = stuck(core, waiting=None, now=time.time() + 1)
    time.sleep(0.002)  # a step a millisecond later

    assert start(core.deliveries, event.id, "tests.handlers:succeed", "the-task").ok  # redelivered
    recovered = core.deliveries.apply(
        Change(
            event.id,
            "tests.handlers:succeed",
            "recover_running",
            Status.QUEUED,
            "recovered",
            task_id="new-task",
            options={"expect_task": found.task_id, "expect_updated": found.updated_at},
        )
    )

    assert recovered.result == "superseded"
    assert core.get_event(event.id).deliveries["tests.handlers:succeed"]["task_id"] == "the-task"
