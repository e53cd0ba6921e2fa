"""Redis restarts: a worker lives through them, and every delivery ends succeeded."""

from __future__ import annotations

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
RESTARTS = 4


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


@pytest.mark.parametrize("appendfsync", ["everysec", "always"])
def test_the_worker_lives_through_redis_restarts_and_every_delivery_succeeds(
    tmp_path: Path, live_settings: Any, unique_type: Any, appendfsync: str
) -> None:
    server = RedisServer(tmp_path / "redis", appendfsync)
    server.start()
    broker = server.url.rsplit("/", 1)[0] + "/1"
    env = {"REDIS_URL": server.url, "CELERY_BROKER_URL": broker, **FAST_RECOVERY}
    worker = Worker(tmp_path / "worker.log", env, concurrency=8, name="restarts")
    try:
        settings = live_settings.model_copy(
            update={"redis_url": server.url, "recovery_grace": 0.5, "outbox_grace": 0.5}
        )
        core = Core(settings, None, CeleryEnqueuer(app, broker))
        kind = unique_type()
        core.subscribe([kind], HANDLER)
        events = [core.publish(kind, {"seconds": 0.1}, "test").event_id for _ in range(200)]
        time.sleep(1.1)  # the events are on disk (everysec): a kill -9 loses deliveries only

        for stop in ("shutdown", "kill") * RESTARTS:
            time.sleep(0.4)  # under load: deliveries reserved, running and acknowledged
            server.kill() if stop == "kill" else server.stop()
            time.sleep(0.3)
            server.start()
            assert worker.process.poll() is None, worker.log()[-3000:]

        counts = settle(core, events, timeout=40)
        assert worker.process.poll() is None, worker.log()[-3000:]
        assert "Unrecoverable error" not in worker.log(), worker.log()[-3000:]
        assert counts == {"succeeded": len(events)}, counts
    finally:
        worker.stop()
        server.stop()
