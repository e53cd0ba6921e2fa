"""The raw Celery baselines, measured with the Procfile's pool and concurrency.

- enqueue: ``apply_async`` of a no-op task per second from one process, no worker
  running (what replay and retries are compared with);
- tasks: no-op tasks per second from the first send to the last task done, the
  worker running (what dispatch is compared with); and the same with the worker
  sending task events (``-E``) as the Procfile's does, for Flower;
- latency: from ``apply_async`` returning to the task starting, at the latency rate;
- the worker's resident memory after that.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from bench import raw_celery
from bench.context import Bench, wait_drained
from bench.scenarios.common import paced


@dataclass
class RawCelery:
    """What raw Celery did in this run."""

    enqueue_rates: list[float] = field(default_factory=list)
    task_rates: list[float] = field(default_factory=list)
    task_rates_with_events: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    rss: int = 0


def _enqueue(count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        raw_celery.noop.apply_async()
    return count / (time.perf_counter() - started)


def _tasks(bench: Bench, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        raw_celery.noop.apply_async()
    return count / (wait_drained(bench.broker, [raw_celery.QUEUE]) - started)


def _latencies(bench: Bench) -> list[float]:
    sizes = bench.sizes
    count = int(sizes.latency_rate * sizes.latency_seconds)
    key = f"bench-raw-started-{uuid.uuid4().hex[:8]}"
    sent: dict[str, float] = {}

    def send(_: int) -> None:
        task_id = uuid.uuid4().hex
        raw_celery.started.apply_async((key,), task_id=task_id)
        sent[task_id] = time.time()

    paced(count, sizes.latency_rate, send)
    deadline = time.monotonic() + 60
    while bench.broker.hlen(key) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    started = bench.broker.hgetall(key)
    return [float(started[t]) - at for t, at in sent.items() if t in started]


def measure(bench: Bench) -> RawCelery:
    raw = RawCelery()
    for _ in range(bench.sizes.repeats):
        raw.enqueue_rates.append(_enqueue(bench.sizes.replay_events))
    worker = bench.stack.raw_worker("raw-worker")
    wait_drained(bench.broker, [raw_celery.QUEUE])
    for _ in range(bench.sizes.repeats):
        raw.task_rates.append(_tasks(bench, bench.sizes.dispatch_events))
    raw.latencies = _latencies(bench)
    raw.rss = worker.rss_bytes()
    worker.stop()
    worker = bench.stack.raw_worker("raw-worker-events", events=True)
    for _ in range(bench.sizes.repeats):
        raw.task_rates_with_events.append(_tasks(bench, bench.sizes.dispatch_events))
    worker.stop()
    bench.reset()
    return raw
