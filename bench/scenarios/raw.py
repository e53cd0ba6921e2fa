"""The raw Celery baselines, measured with the Procfile's pool and concurrency.

- enqueue: ``apply_async`` of a no-op task per second from one process, no worker
  running, and the sending thread's CPU per call (what replay and retries are
  compared with);
- tasks: no-op tasks per second from the first send to the last task done, the
  worker running (what dispatch is compared with); and the same with the worker
  sending task events (``-E``) as the Procfile's does, for Flower. Each with its
  cost: the worker's CPU and the sending thread's (the relay's part in ours), and
  Redis's commands, round trips and CPU;
- latency: from ``apply_async`` returning to the task starting, at
  :data:`LATENCY_SHARE` of the tasks' rate (their median);
- the worker's resident memory after that.
"""

from __future__ import annotations

import statistics
import time
import uuid
from dataclasses import dataclass, field

from bench import raw_celery
from bench.context import Bench, wait_drained
from bench.cost import Cost
from bench.scenarios.common import paced
from bench.services import Process

#: The end-to-end latency rate, as a share of raw Celery's no-op tasks a second.
LATENCY_SHARE = 0.5


@dataclass
class RawCelery:
    """What raw Celery did in this run."""

    enqueue_rates: list[float] = field(default_factory=list)
    #: CPU seconds per ``apply_async``, of the sending thread.
    enqueue_cpu: list[float] = field(default_factory=list)
    task_rates: list[float] = field(default_factory=list)
    task_rates_with_events: list[float] = field(default_factory=list)
    #: What each repetition of the tasks (``dispatch_events`` of them) cost.
    task_costs: list[Cost] = field(default_factory=list)
    task_costs_with_events: list[Cost] = field(default_factory=list)
    #: The end-to-end latency rate: a share of the tasks' rate.
    latency_rate: float = 0.0
    latencies: list[float] = field(default_factory=list)
    rss: int = 0


def _send(count: int) -> float:
    """Send ``count`` no-op tasks; the CPU seconds the sending thread spent."""
    began = time.thread_time()
    for _ in range(count):
        raw_celery.noop.apply_async()
    return time.thread_time() - began


def _enqueue(raw: RawCelery, count: int) -> None:
    started = time.perf_counter()
    cpu = _send(count)
    raw.enqueue_rates.append(count / (time.perf_counter() - started))
    raw.enqueue_cpu.append(cpu / count)


def _tasks(bench: Bench, count: int, worker: Process) -> tuple[float, Cost]:
    """Tasks a second, and their cost: the worker's CPU with the sender's, and Redis's."""
    meter = bench.meter(worker)
    started = time.perf_counter()
    sending = _send(count)
    finished = wait_drained(bench.broker, [raw_celery.QUEUE])
    cost = meter.stop()
    cost.cpu += sending
    return count / (finished - started), cost


def _latencies(bench: Bench, rate: float) -> list[float]:
    count = int(rate * bench.sizes.latency_seconds)
    key = f"bench-raw-started-{uuid.uuid4().hex[:8]}"
    sent: dict[str, float] = {}

    def send(_: int) -> None:
        task_id = uuid.uuid4().hex
        raw_celery.started.apply_async((key,), task_id=task_id)
        sent[task_id] = time.time()

    paced(count, rate, send)
    deadline = time.monotonic() + 60
    while bench.broker.hlen(key) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    started = bench.broker.hgetall(key)
    return [float(started[t]) - at for t, at in sent.items() if t in started]


def measure(bench: Bench) -> RawCelery:
    raw = RawCelery()
    count = bench.sizes.dispatch_events
    for _ in range(bench.sizes.repeats):
        _enqueue(raw, bench.sizes.replay_events)
    worker = bench.stack.raw_worker("raw-worker")
    wait_drained(bench.broker, [raw_celery.QUEUE])
    for _ in range(bench.sizes.repeats):
        rate, cost = _tasks(bench, count, worker)
        raw.task_rates.append(rate)
        raw.task_costs.append(cost)
    raw.latency_rate = round(LATENCY_SHARE * statistics.median(raw.task_rates))
    raw.latencies = _latencies(bench, raw.latency_rate)
    raw.rss = worker.rss_bytes()
    worker.stop()
    worker = bench.stack.raw_worker("raw-worker-events", events=True)
    for _ in range(bench.sizes.repeats):
        rate, cost = _tasks(bench, count, worker)
        raw.task_rates_with_events.append(rate)
        raw.task_costs_with_events.append(cost)
    worker.stop()
    bench.reset()
    return raw
