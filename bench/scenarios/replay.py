"""Replay and dead-letter retry: events re-dispatched per second, against raw ``apply_async``.

No worker runs: what is measured is how fast the core puts stored work back on
the broker (the pace limit, ``EDA_REPLAY_RATE``, is set out of the way).
"""

from __future__ import annotations

import time

from bench.context import Bench
from bench.figures import Figure, median_run
from bench.scenarios.common import NOOP, require, store_events
from bench.scenarios.raw import RawCelery
from eda.dead_letters import DeadLetter
from eda.delivery import Change, Status
from eda.event import Event
from eda.times import now_iso


def _kill(bench: Bench, events: list[Event]) -> None:
    """Give every event a dead delivery and a dead letter, through the lifecycle's own steps."""
    steps = bench.plain_core.deliveries
    for event in events:
        steps.apply(Change(event.id, NOOP, "dispatch", Status.QUEUED, "bench", task_id="bench"))
        steps.apply(Change(event.id, NOOP, "start", Status.RUNNING, task_id="bench"))
        letter = DeadLetter(
            event_id=event.id,
            event_type=event.type,
            handler=NOOP,
            task_id="bench",
            error_class="eda.errors.PermanentError",
            error="bench",
            traceback="",
            attempts=1,
            first_failure_at=now_iso(),
            last_failure_at=now_iso(),
        )
        steps.apply(
            Change(
                event.id,
                NOOP,
                "finish",
                Status.DEAD,
                "PermanentError: bench",
                task_id="bench",
                options={"attempt": 1},
                letter=letter,
            )
        )


def _replay(bench: Bench, count: int) -> float:
    store_events(bench, count)
    started = time.perf_counter()
    report = bench.core.replay(event_type="bench.noop", limit=count)
    elapsed = time.perf_counter() - started
    require(report.deliveries == count, f"replay re-dispatched {report.deliveries} of {count}")
    return count / elapsed


def _retry(bench: Bench, count: int) -> float:
    _kill(bench, store_events(bench, count))
    started = time.perf_counter()
    retried = bench.core.retry_dead_letters(limit=count).retried
    elapsed = time.perf_counter() - started
    require(len(retried) == count, f"retried {len(retried)} of {count} dead letters")
    return count / elapsed


def measure(bench: Bench, raw: RawCelery) -> list[Figure]:
    count = bench.sizes.replay_events
    replays: list[tuple[float, float]] = []
    retries: list[tuple[float, float]] = []
    for index in range(bench.sizes.repeats):
        replays.append((_replay(bench, count), raw.enqueue_rates[index]))
        bench.reset()
        retries.append((_retry(bench, count), raw.enqueue_rates[index]))
        bench.reset()
    return [
        Figure("replay", "replay: events re-dispatched/s", "/s", *median_run(replays),
               "raw apply_async", runs=replays),
        Figure("dlq_retry", "DLQ retry: letters re-dispatched/s", "/s", *median_run(retries),
               "raw apply_async", runs=retries),
    ]  # fmt: skip
