"""What survives a crash: a killed worker's delivery; events stored while the broker was down."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from eda.core import Core
from eda.redis_server import free_port
from eda.settings import Settings
from tasks import app
from tasks.delivery import sweep
from tasks.enqueue import CeleryEnqueuer
from tests.conftest import wait_for
from tests.handlers import attempts
from tests.workers import Worker

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
    live: Core, live_settings: Settings, client: Any, unique_type: Any
) -> None:
    down = f"redis://127.0.0.1:{free_port()}/0"
    offline = Core(live_settings, client, CeleryEnqueuer(app, down), live.routes)
    event_type = unique_type()
    offline.subscribe([event_type], "tests.handlers:succeed")

    event_id = offline.publish(event_type, {}, "test").event_id

    stored = offline.get_event(event_id)
    assert stored.status == "pending"
    assert event_id in offline.store.pending(older_than=0)
    time.sleep(live_settings.outbox_grace)

    sweep.apply_async(queue="default")  # the beat schedule's task, run by the live worker
    sweep.apply_async(queue="default")

    wait_for(lambda: live.get_event(event_id).status == "succeeded")
    time.sleep(0.5)
    assert len(attempts(client, event_id, "succeed")) == 1
    assert event_id not in live.store.pending(older_than=0)
    assert live.sweep() == 0
