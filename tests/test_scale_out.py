"""Many workers, many relays: two workers on one lane and two relays on one store, one of each
killed mid-run, and every event handled, none twice beyond the delivery guarantee."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eda.core import Core
from eda.settings import Settings
from tasks import app, handlers
from tasks.enqueue import CeleryEnqueuer
from tests.brokers import Broker
from tests.conftest import wait_for
from tests.handlers import attempts
from tests.workers import FAST, ROOT, Worker

pytestmark = [pytest.mark.brokers, pytest.mark.timeout(120)]

#: Heartbeats and recovery in fractions of a second, as beat's sweep would run them.
QUICK = {"EDA_HEARTBEAT_INTERVAL": "0.2", "EDA_RECOVERY_GRACE": "1", "EDA_OUTBOX_GRACE": "0.5"}
HANDLER = "tests.handlers:slow"


class Relay:
    """One ``python -m tasks.relay`` process (the Procfile's relay)."""

    def __init__(self, log: Path, env: dict[str, str]) -> None:
        self.log = log
        with open(log, "wb") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tasks.relay"],
                cwd=ROOT,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        wait_for(lambda: "relay started" in log.read_text(errors="replace"), timeout=30)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=15)


@pytest.fixture
def scaled_out(
    make_settings: Any, broker_under_test: Broker, prefix: str, tmp_path: Path
) -> Iterator[tuple[Core, Core, list[Worker], list[Relay]]]:
    """(the web's core, the sweeper's core, two workers on the alerts lane, two relays), on a
    prefix and a broker of this test's own."""
    broker = broker_under_test.url(8)
    env = {**QUICK, "EDA_PREFIX": prefix, "CELERY_BROKER_URL": broker}
    settings: Settings = make_settings(
        recovery_grace=1.0, heartbeat_interval=0.2, outbox_grace=0.5, retry_backoff=0.05
    )
    registry, routes = handlers(settings)
    enqueuer = CeleryEnqueuer(app, broker)
    sweeper = Core(settings, None, enqueuer, routes, registry)
    web = Core(settings, None, enqueuer, routes, registry, defer_dispatch=True)
    workers: list[Worker] = []
    relays: list[Relay] = []
    try:
        for n in range(2):
            workers.append(
                Worker(
                    tmp_path / f"worker{n}.log",
                    env,
                    queues="alerts",
                    concurrency=2,
                    name=f"lane{n}",
                    options=("--without-relay",),
                )
            )
        relay_env = {**os.environ, **FAST, **env, "PYTHONPATH": str(ROOT)}
        relays = [Relay(tmp_path / f"relay{n}.log", relay_env) for n in range(2)]
        yield web, sweeper, workers, relays
    finally:
        for relay in relays:
            relay.stop()
        for worker in workers:
            worker.stop()
        broker_under_test.empty(broker)


def test_two_workers_and_two_relays_lose_nothing_when_one_of_each_is_killed(
    scaled_out: tuple[Core, Core, list[Worker], list[Relay]], client: Any, unique_type: Any
) -> None:
    web, sweeper, workers, relays = scaled_out
    kind = unique_type("load", lane="alert")
    web.subscribe([kind], HANDLER)

    def succeeded(ids: list[str]) -> int:
        records = [web.get_event(i).deliveries.get(HANDLER, {}) for i in ids]
        return sum(record.get("status") == "succeeded" for record in records)

    first = [web.publish(kind, {"seconds": 0.02}, "test").event_id for _ in range(150)]
    wait_for(lambda: succeeded(first) >= 30, timeout=60)
    workers[0].kill()  # mid-run: it holds deliveries, running and reserved
    killed_at = time.time()  # it is gone: nothing starts on it after this
    relays[0].kill()  # and the other relay carries on with the store's queue alone
    second = [web.publish(kind, {"seconds": 0.02}, "test").event_id for _ in range(150)]
    ids = first + second

    def settled() -> bool:
        sweeper.sweep()  # what beat does every EDA_SWEEP_INTERVAL
        sweeper.recover()
        return succeeded(ids) == len(ids)

    wait_for(settled, timeout=90, interval=0.3)
    runs = [len(attempts(client, i, "slow")) for i in ids]
    assert min(runs) >= 1  # every event handled
    # Twice only for what the killed worker had started and not yet recorded as ended.
    twice = [i for i, count in zip(ids, runs, strict=True) if count == 2]
    assert max(runs) <= 2, runs
    assert all(attempts(client, i, "slow")[0] < killed_at for i in twice)
    assert sum(bool(attempts(client, i, "slow")) for i in second) == len(second)
