"""Dispatch: events/s from stored to a no-op delivery recorded ``succeeded``, against raw Celery.

The target is against raw Celery as it ships, without task events; a second row
compares with raw Celery sending task events (``-E``), as the Procfile's worker
does so that Flower sees every task.

The events are stored first; the clock runs from handing them all to the
relay (as the web's store write does) to the moment the last one
is ``succeeded``. The worker (the Procfile's) runs throughout, as the raw
baseline's did. Redis memory per event is read around the first repetition:
once the events are stored, and once they are delivered (every client's buffers
left out: ``bench.context.memory_in_use``).

Each repetition's cost runs from the hand-over until the last message is also
acknowledged (raw Celery's runs end there): the CPU of the worker and the relay
against that of the raw worker and of the thread that sent its tasks; and
Redis's round trips and commands, everything but the suite's own looks: the
relay's, the worker's (its heartbeat and task events too), the hand-over.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench.context import Bench, memory_in_use, wait_acknowledged, wait_settled
from bench.cost import Cost
from bench.figures import Figure, judged, median_run
from bench.scenarios.common import NOOP, SAMPLED, require, statuses, store_events
from bench.scenarios.raw import RawCelery
from bench.services import Process, stop_all
from eda.redis_server import free_port

#: The issue's targets: 0.6x raw Celery; at most 1.5 KB per event beyond its payload.
TARGET = 0.6
OVERHEAD_TARGET = 1536
#: CPU per delivery at most 1.5 times raw Celery's per task.
CPU_TARGET = 1.5
#: Traces and metrics on cost at most a tenth of the deliveries per second.
OBSERVED_TARGET = 0.9


@dataclass
class Dispatched:
    """One repetition: events a second, Redis bytes per event, and what it cost."""

    rate: float
    memory: dict[str, float]
    cost: Cost


def run_once(bench: Bench, count: int, processes: Sequence[Process | None] = ()) -> Dispatched:
    """Events per second from the hand-over to the last ``succeeded``; bytes per event.

    The cost counts the CPU of ``processes`` (the worker and the relay).
    """
    before = memory_in_use(bench.store)
    events = store_events(bench, count)
    stored = memory_in_use(bench.store)
    ids = [event.id for event in events]
    meter = bench.meter(*processes)
    started = time.perf_counter()
    bench.store.rpush(bench.plain_core.keys.dispatch, *ids)
    finished = wait_settled(bench, ids)
    wait_acknowledged(bench)
    cost = meter.stop()
    counts = statuses(bench, ids, NOOP)
    require(counts == {"succeeded": count}, f"dispatched deliveries ended as {counts}")
    delivered = memory_in_use(bench.store)
    memory = {"stored": (stored - before) / count, "delivered": (delivered - before) / count}
    return Dispatched(count / (finished - started), memory, cost)


def measure_observed(bench: Bench, plain: list[float]) -> list[Figure]:
    """Dispatch with the worker and relay tracing (to the run's sink) and serving metrics,
    every trace kept and then one in ten, against the same run's dispatch without
    (``plain``, repetition by repetition)."""
    kept = _observed(bench, plain, "observed", {})
    sampled = _observed(bench, plain, "sampled", SAMPLED)
    return [
        Figure(
            "dispatch_observed",
            "dispatch: traces and worker metrics on, against off",
            "/s",
            *median_run(kept),
            "the same dispatch, traces off",
            runs=kept,
            **judged(kept, OBSERVED_TARGET),
        ),
        Figure(
            "dispatch_sampled",
            "dispatch: the same, one trace in ten sampled",
            "/s",
            *median_run(sampled),
            "the same dispatch, traces off",
            runs=sampled,
            details=SAMPLED,
            **judged(sampled, OBSERVED_TARGET),
        ),
    ]


def _observed(
    bench: Bench, plain: list[float], name: str, more: dict[str, str]
) -> list[tuple[float, float]]:
    """Each repetition's rate with traces and metrics on (``more``: the sampler), beside
    the plain run of the same index."""
    env = {**bench.observed, **more}
    worker, relay = bench.stack.worker_and_relay(
        f"worker-{name}",
        f"relay-{name}",
        {**env, "EDA_WORKER_METRICS_PORT": str(free_port())},
        relay_more=env,
    )
    runs: list[tuple[float, float]] = []
    for index in range(bench.sizes.repeats):
        runs.append((run_once(bench, bench.sizes.dispatch_events).rate, plain[index]))
        bench.reset()
    stop_all(worker, relay)
    return runs


def measure(bench: Bench, raw: RawCelery, processes: Sequence[Process | None]) -> list[Figure]:
    """The dispatch rows; ``processes`` are the worker and the relay (None without one)."""
    count = bench.sizes.dispatch_events
    done = []
    for _ in range(bench.sizes.repeats):
        done.append(run_once(bench, count, processes))
        bench.reset()
    runs = [(d.rate, rate) for d, rate in zip(done, raw.task_rates, strict=True)]
    with_events = [(d.rate, rate) for d, rate in zip(done, raw.task_rates_with_events, strict=True)]
    size = bench.sizes.payload_bytes
    worst = max(done[0].memory.values())
    return [
        Figure(
            "dispatch",
            "dispatch: events stored→succeeded/s",
            "/s",
            *median_run(runs),
            "raw Celery no-op",
            runs=runs,
            **judged(runs, TARGET),
        ),
        Figure(
            "dispatch_vs_events",
            "dispatch: the same, against raw Celery with -E",
            "/s",
            *median_run(with_events),
            "raw Celery no-op, task events on",
            runs=with_events,
        ),
        *cost_figures(bench, [d.cost for d in done], raw),
        Figure(
            "redis_bytes_per_event",
            "Redis bytes per event (1 KB payload)",
            "B",
            worst,
            size,
            "payload",
            higher_is_better=False,
            target=f"≤ payload + {OVERHEAD_TARGET} B",
            met=worst - size <= OVERHEAD_TARGET,
            details={f"{k}_bytes": round(v) for k, v in done[0].memory.items()},
        ),
    ]


def cost_figures(bench: Bench, costs: list[Cost], raw: RawCelery) -> list[Figure]:
    """CPU per delivery against raw Celery without and with task events; Redis round trips.

    Redis's own CPU is kept apart, in the rows' details; the commands by name (over
    every repetition) go into the run's notes.
    """
    count = bench.sizes.dispatch_events

    def pairs(theirs: list[Cost], of: Callable[[Cost], float]) -> list[tuple[float, float]]:
        return [(of(a) / count, of(b) / count) for a, b in zip(costs, theirs, strict=True)]

    runs = {"ours": costs, "raw": raw.task_costs, "raw_events": raw.task_costs_with_events}
    total = {name: sum(found, Cost()) for name, found in runs.items()}
    deliveries = len(costs) * count
    bench.notes["redis_commands_per_delivery"] = {
        name: cost.commands_per(deliveries) for name, cost in total.items()
    }
    redis_cpu = {
        f"redis_cpu_{name}_us": round(cost.redis_cpu / deliveries * 1e6, 1)
        for name, cost in total.items()
    }
    cpu = pairs(raw.task_costs, lambda c: c.cpu)
    cpu_events = pairs(raw.task_costs_with_events, lambda c: c.cpu)
    trips = pairs(raw.task_costs, lambda c: c.round_trips)
    events_trips = total["raw_events"].round_trips / deliveries
    return [
        Figure(
            "dispatch_cpu",
            "dispatch: CPU per delivery (worker + relay)",
            "µs",
            *median_run(cpu),
            "raw Celery worker + sender",
            runs=cpu,
            **judged(cpu, CPU_TARGET, higher_is_better=False),
            details=redis_cpu,
        ),
        Figure(
            "dispatch_cpu_vs_events",
            "dispatch: CPU per delivery, against raw Celery with -E",
            "µs",
            *median_run(cpu_events),
            "raw Celery worker -E + sender",
            higher_is_better=False,
            runs=cpu_events,
            details=redis_cpu,
        ),
        Figure(
            "dispatch_round_trips",
            "dispatch: Redis round trips per delivery",
            "trips",
            *median_run(trips),
            "raw Celery no-op",
            higher_is_better=False,
            runs=trips,
            details={"raw_with_events": round(events_trips, 2)},
        ),
    ]
