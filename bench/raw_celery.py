"""The dispatch baseline: raw Celery, no-op tasks, on the run's broker (a queue of its own).

``celery -A bench.raw_celery worker`` runs with the Procfile's pool and
concurrency; the delivery options that are part of the contract (JSON only,
acks late, prefetch 1, no result backend) are the project's, nothing else is.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import redis
from celery import Celery, signals

#: The queue of the baseline's tasks.
QUEUE = "bench_raw"

app = Celery("bench_raw")
# The broker is the project's: Celery reads CELERY_BROKER_URL itself.
app.conf.update(
    broker_connection_retry_on_startup=True,
    task_default_queue=QUEUE,
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.noop")
def noop() -> None:
    """Nothing: the cost of a Celery task alone."""


@app.task(name="bench.started", bind=True)
def started(self: Any, key: str) -> None:
    """Note the time (wall clock) the task started, under its task id."""
    _client().hset(key, str(self.request.id), repr(time.time()))


_redis: list[redis.Redis] = []


def _client() -> redis.Redis:
    if not _redis:
        _redis.append(
            redis.Redis.from_url(app.connection_for_write().as_uri(include_password=True))
        )
    return _redis[0]


@signals.worker_ready.connect
def _ready(**_: Any) -> None:
    # The default log level hides Celery's own "ready." line: say it, for the suite to see.
    print("bench raw worker ready.", file=sys.stderr, flush=True)
