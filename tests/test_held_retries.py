"""Long retries wait in the store, not in a worker (``EDA_RETRY_HOLD_MAX``, ``eda/recovery.py``).

Celery keeps a countdown retry's message in the worker, unacknowledged, until it
is due: a burst of failing deliveries with long backoffs would sit in a worker's
memory (and, on RabbitMQ, in its prefetch). A retry longer than the setting ends
its task instead; the store holds the delivery in its due set, and the relay
sends it again, under a new task id, when it is due.
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tasks
from eda.core import Core
from eda.delivery import Change, Delivery, Status, held_until
from eda.settings import load
from tasks.enqueue import CeleryEnqueuer
from tests.brokers import Broker
from tests.conftest import wait_for
from tests.handlers import attempts
from tests.lifecycle import queue, start
from tests.workers import FAST, Worker

pytestmark = [pytest.mark.timeout(60), pytest.mark.brokers]

HANDLER = "tests.handlers:flaky"
ROUTES = """\
routes:
  - events: ["heldlong.*"]
    handler: tests.handlers:flaky
    retry: {max_retries: 3, backoff: 5, backoff_max: 5, jitter: false}
  - events: ["held.*"]
    handler: tests.handlers:flaky
    retry: {max_retries: 3, backoff: 1.5, backoff_max: 1.5, jitter: false}
"""


class Held:
    """A worker (with its relay thread) that holds retries over 0.2 s in the store, which a
    test may stop and start again; the core that dispatches to it, and its broker."""

    def __init__(self, folder: Path, broker: str) -> None:
        routes = folder / "routes.yaml"
        routes.write_text(ROUTES)
        self.folder, self.broker = folder, broker
        self.env = {
            # A prefix of its own: no other relay (the session worker's) sends its retries.
            "EDA_PREFIX": f"held-{uuid.uuid4().hex[:8]}",
            "CELERY_BROKER_URL": broker,
            "EDA_ROUTES": str(routes),
            "EDA_RETRY_HOLD_MAX": "0.2",
            "EDA_RECOVERY_GRACE": "0.5",
        }
        loaded = load({**os.environ, **FAST, **self.env})
        registry, found = tasks.handlers(loaded)
        self.core = Core(
            loaded, enqueuer=CeleryEnqueuer(tasks.app, broker), routes=found, handlers=registry
        )
        self.worker: Worker | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = self.folder / f"worker-{self.starts}.log"
        self.worker = Worker(log, env=self.env, name="held")

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker = None


@pytest.fixture
def held(tmp_path: Path, broker_under_test: Broker) -> Iterator[Held]:
    started = Held(tmp_path, broker_under_test.url(6))
    started.start()
    try:
        yield started
    finally:
        started.stop()
        broker_under_test.empty(started.broker)


def record(core: Core, event_id: str) -> Delivery:
    return record_of(core, event_id, HANDLER)


def record_of(core: Core, event_id: str, handler: str) -> Delivery:
    found = core.deliveries.get_many([(event_id, handler)])[0]
    assert found is not None
    return found


def retrying_held(core: Core, event_id: str) -> Delivery:
    return wait_for(
        lambda: (r := record(core, event_id)).status == "retrying" and r.due and r, timeout=20
    )


def test_a_long_retry_waits_in_the_store_and_is_sent_again_when_due(
    held: Held, broker_under_test: Broker, client: Any
) -> None:
    core = held.core
    # A backoff long enough for the worker to stop before it is due.
    event_id = core.publish("heldlong.once", {"fail_times": 1}, "test").event_id
    waiting = retrying_held(core, event_id)
    assert core.redis.zscore(core.keys.due, f"{event_id} {HANDLER}") == waiting.due

    # No message holds it meanwhile: a countdown retry's message, which Celery keeps in
    # the worker, would go back to the lane when the worker stops; none does.
    held.stop()
    assert broker_under_test.waiting(held.broker, "default") == 0
    assert record(core, event_id).status == "retrying"

    # Once due, it is sent again under a new task id; twice looking sends it once.
    wait_for(lambda: time.time() * 1000 >= waiting.due)
    assert (core.send_held(), core.send_held()) == (1, 0)
    assert broker_under_test.waiting(held.broker, "default") == 1
    held.start()
    wait_for(lambda: record(core, event_id).status == "succeeded", timeout=20)

    done = record(core, event_id)
    first, second = done.runs[0].attempts
    assert (first.status, second.status) == ("retrying", "succeeded")
    assert second.task_id != waiting.task_id
    ran = attempts(client, event_id, "flaky")
    assert len(ran) == 2  # the handler ran twice: the failure and the success
    assert ran[1] - ran[0] >= 4.9  # not before the backoff (5 s) was over
    assert core.redis.zscore(core.keys.due, f"{event_id} {HANDLER}") is None
    assert not done.due


def test_the_relay_sends_a_held_retry_when_due(held: Held, client: Any) -> None:
    core = held.core
    event_id = core.publish("held.relayed", {"fail_times": 2}, "test").event_id
    wait_for(lambda: record(core, event_id).status == "succeeded", timeout=30)
    done = record(core, event_id)
    assert [a.status for a in done.runs[0].attempts] == ["retrying", "retrying", "succeeded"]
    ran = attempts(client, event_id, "flaky")
    assert len(ran) == 3 and min(b - a for a, b in itertools.pairwise(ran)) >= 1.4


def test_a_held_retry_nobody_sent_is_recovered_once_past_due_and_grace(
    held: Held, client: Any
) -> None:
    core = held.core
    event_id = core.publish("held.lost", {"fail_times": 1}, "test").event_id
    waiting = retrying_held(core, event_id)
    # As if every relay died: the due set forgets it, and only recovery is left.
    core.redis.zrem(core.keys.due, f"{event_id} {HANDLER}")
    assert core.recover() == 0  # not due yet: not stuck either

    recovered = wait_for(lambda: core.recover() > 0, timeout=20)
    assert recovered
    assert time.time() * 1000 >= waiting.due + 500  # only past due and the grace
    wait_for(lambda: record(core, event_id).status == "succeeded", timeout=20)
    assert len(attempts(client, event_id, "flaky")) == 2


def test_a_held_delivery_the_broker_refuses_is_held_again_with_its_flow_state(
    core: Core, refusing_broker: str
) -> None:
    nowhere = CeleryEnqueuer(tasks.app, broker_url=refusing_broker)
    refused = Core(core.settings, core.redis, nowhere)
    event = refused.publish("held.refused", {}, "test")
    steps, handler = refused.deliveries, "h"
    queue(steps, event.event_id, handler)
    start(steps, event.event_id, handler)
    # A retry held until now, carrying what a debounce it passed hands its next pass.
    steps.apply(
        Change(
            event.event_id,
            handler,
            "finish",
            Status.RETRYING,
            "failed",
            task_id="t1",
            options={"attempt": 1, **held_until(0.0, {"debounced": True})},
        )
    )

    assert refused.send_held() == 0  # the broker is unreachable

    again = record_of(refused, event.event_id, handler)
    assert again.status == "retrying" and again.due > 0
    assert again.carry == {"debounced": True}  # kept for the next pass
    member = f"{event.event_id} {handler}"
    assert refused.redis.zscore(refused.keys.due, member) == again.due
    assert "not sent" in again.history()[-1]["reason"]
