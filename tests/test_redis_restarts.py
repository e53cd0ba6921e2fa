"""Redis restarts: a worker lives through them, and every delivery ends succeeded."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from eda.core import Core
from tasks import app
from tasks.enqueue import CeleryEnqueuer
from tests.conftest import RedisServer
from tests.workers import Worker

#: Recovery in milliseconds: a restart's stuck deliveries come back at once.
FAST_RECOVERY = {
    "EDA_RECOVERY_GRACE": "0.5",
    "EDA_HEARTBEAT_INTERVAL": "0.2",
    "EDA_STORE_WAIT": "5",
    "EDA_VISIBILITY_TIMEOUT": "30",
    "EDA_TASK_TIME_LIMIT": "10",
    "EDA_TASK_SOFT_TIME_LIMIT": "8",
}
HANDLER = "tests.handlers:slow"
RESTARTS = 3


def statuses(core: Core, events: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in core.deliveries.get_many([(event, HANDLER) for event in events]):
        status = str(record.status) if record else "missing"
        counts[status] = counts.get(status, 0) + 1
    return counts


def settle(core: Core, events: list[str], timeout: float) -> dict[str, int]:
    """Run recovery as beat's sweep does until every delivery is settled, or ``timeout``."""
    deadline = time.monotonic() + timeout
    counts = statuses(core, events)
    while time.monotonic() < deadline and counts != {"succeeded": len(events)}:
        try:
            core.sweep()
            core.recover()
        except Exception:  # the store may still be starting: the next turn tries
            pass
        time.sleep(0.2)
        counts = statuses(core, events)
    return counts


@pytest.mark.parametrize(
    ("appendfsync", "restarted"),
    [("everysec", "store and broker"), ("always", "store and broker"), ("everysec", "broker")],
)
def test_the_worker_lives_through_redis_restarts_and_every_delivery_succeeds(
    tmp_path: Path, live_settings: Any, unique_type: Any, appendfsync: str, restarted: str
) -> None:
    store = RedisServer(tmp_path / "store", appendfsync)
    broker = RedisServer(tmp_path / "broker", appendfsync)
    servers = [broker] if restarted == "broker" else [store, broker]
    store.start()
    broker.start()
    env = {"REDIS_URL": store.url, "CELERY_BROKER_URL": broker.url, **FAST_RECOVERY}
    worker = Worker(tmp_path / "worker.log", env, concurrency=8, name="restarts")
    try:
        settings = live_settings.model_copy(
            update={"redis_url": store.url, "recovery_grace": 0.5, "outbox_grace": 0.5}
        )
        core = Core(settings, None, CeleryEnqueuer(app, broker.url))
        kind = unique_type()
        core.subscribe([kind], HANDLER)
        events: list[str] = []
        publishing = threading.Event()
        publishing.set()

        def publish() -> None:  # a steady load, through every restart
            while publishing.is_set():
                try:
                    events.append(core.publish(kind, {"seconds": 0.02}, "test").event_id)
                except Exception:  # the store is down: this one was never answered
                    time.sleep(0.05)
                time.sleep(0.01)

        publisher = threading.Thread(target=publish)
        publisher.start()
        try:
            for stop in ("shutdown", "kill") * RESTARTS:
                time.sleep(0.5)  # under load: deliveries reserved, running and acknowledged
                for server in servers:
                    server.kill() if stop == "kill" else server.stop()
                time.sleep(0.3)
                for server in servers:
                    server.start()
                assert worker.process.poll() is None, worker.log()[-3000:]
        finally:
            publishing.clear()
            publisher.join()

        counts = settle(core, events, timeout=40)
        assert worker.process.poll() is None, worker.log()[-3000:]
        assert "Unrecoverable error" not in worker.log(), worker.log()[-3000:]
        assert counts == {"succeeded": len(events)}, counts
    finally:
        worker.stop()
        store.stop()
        broker.stop()
