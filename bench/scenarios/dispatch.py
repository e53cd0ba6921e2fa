"""Dispatch: events/s from stored to a no-op delivery recorded ``succeeded``, against raw Celery.

The target is against raw Celery as it ships, without task events; a second row
compares with raw Celery sending task events (``-E``), as the Procfile's worker
does so that Flower sees every task.

The events are stored first; the clock runs from handing them all to the
relay (as the web's store write does) to the moment the last one
is ``succeeded``. The worker (the Procfile's) runs throughout, as the raw
baseline's did. Redis memory per event is read around the first repetition:
once the events are stored, and once they are delivered.
"""

from __future__ import annotations

import time

from bench.context import Bench, memory_in_use, wait_settled
from bench.figures import Figure, median_run
from bench.scenarios.common import NOOP, require, statuses, store_events
from bench.scenarios.raw import RawCelery
from eda.redis_server import free_port

#: The issue's targets: 0.6x raw Celery; at most 1.5 KB per event beyond its payload.
TARGET = 0.6
OVERHEAD_TARGET = 1536
#: Traces and metrics on cost at most a tenth of the deliveries per second.
OBSERVED_TARGET = 0.9


def run_once(bench: Bench, count: int) -> tuple[float, dict[str, float]]:
    """Events per second from the hand-over to the last ``succeeded``; bytes per event."""
    before = memory_in_use(bench.store)
    events = store_events(bench, count)
    stored = memory_in_use(bench.store)
    ids = [event.id for event in events]
    started = time.perf_counter()
    bench.store.rpush(bench.plain_core.keys.dispatch, *ids)
    finished = wait_settled(bench, ids)
    counts = statuses(bench, ids, NOOP)
    require(counts == {"succeeded": count}, f"dispatched deliveries ended as {counts}")
    delivered = memory_in_use(bench.store)
    memory = {"stored": (stored - before) / count, "delivered": (delivered - before) / count}
    return count / (finished - started), memory


def measure_observed(bench: Bench, plain: list[float]) -> Figure:
    """Dispatch with the worker and relay tracing (to the run's sink) and serving metrics,
    against the same run's dispatch without (``plain``, repetition by repetition)."""
    more = {**bench.observed, "EDA_WORKER_METRICS_PORT": str(free_port())}
    worker = bench.stack.worker("worker-observed", more)
    relay = bench.stack.relay("relay-observed", bench.observed)
    runs: list[tuple[float, float]] = []
    for index in range(bench.sizes.repeats):
        runs.append((run_once(bench, bench.sizes.dispatch_events)[0], plain[index]))
        bench.reset()
    worker.stop()
    if relay is not None:
        relay.stop()
    ours, baseline = median_run(runs)
    return Figure("dispatch_observed", "dispatch: traces and worker metrics on, against off",
                  "/s", ours, baseline, "the same dispatch, traces off",
                  target=f"≥ {OBSERVED_TARGET}x", met=ours >= OBSERVED_TARGET * baseline,
                  runs=runs)  # fmt: skip


def measure(bench: Bench, raw: RawCelery) -> list[Figure]:
    runs: list[tuple[float, float]] = []
    with_events: list[tuple[float, float]] = []
    memory: dict[str, float] = {}
    for index in range(bench.sizes.repeats):
        rate, used = run_once(bench, bench.sizes.dispatch_events)
        memory = memory or used
        runs.append((rate, raw.task_rates[index]))
        with_events.append((rate, raw.task_rates_with_events[index]))
        bench.reset()
    size = bench.sizes.payload_bytes
    worst = max(memory.values())
    return [
        Figure("dispatch", "dispatch: events stored→succeeded/s", "/s", *median_run(runs),
               "raw Celery no-op", target=f"≥ {TARGET}x",
               met=median_run(runs)[0] >= TARGET * median_run(runs)[1], runs=runs),
        Figure("dispatch_vs_events", "dispatch: the same, against raw Celery with -E", "/s",
               *median_run(with_events), "raw Celery no-op, task events on",
               runs=with_events),
        Figure("redis_bytes_per_event", "Redis bytes per event (1 KB payload)", "B", worst,
               size, "payload", higher_is_better=False,
               target=f"≤ payload + {OVERHEAD_TARGET} B", met=worst - size <= OVERHEAD_TARGET,
               details={f"{k}_bytes": round(v) for k, v in memory.items()}),
    ]  # fmt: skip
