"""Replay and dead-letter retry: events re-dispatched per second, against raw ``apply_async``.

No worker runs: what is measured is how fast the core puts stored work back on
the broker (the pace limit, ``EDA_REPLAY_RATE``, is set out of the way), and
the CPU the calling thread spends on each, against that of raw ``apply_async``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

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


def _timed(count: int, redispatch: Callable[[], int], what: str) -> tuple[float, float]:
    """Per second and CPU seconds per item of ``redispatch()``, which says how many it did."""
    started, began = time.perf_counter(), time.thread_time()
    done = redispatch()
    cpu, elapsed = time.thread_time() - began, time.perf_counter() - started
    require(done == count, f"{what}: {done} of {count}")
    return count / elapsed, cpu / count


def _replay(bench: Bench, count: int) -> tuple[float, float]:
    store_events(bench, count)
    return _timed(
        count,
        lambda: bench.core.replay(event_type="bench.noop", limit=count).deliveries,
        "replay re-dispatched",
    )


def _retry(bench: Bench, count: int) -> tuple[float, float]:
    _kill(bench, store_events(bench, count))
    return _timed(
        count,
        lambda: len(bench.core.retry_dead_letters(limit=count).retried),
        "dead letters retried",
    )


def measure(bench: Bench, raw: RawCelery) -> list[Figure]:
    count = bench.sizes.replay_events
    replays: list[tuple[float, float]] = []
    retries: list[tuple[float, float]] = []
    replay_cpu: list[tuple[float, float]] = []
    retry_cpu: list[tuple[float, float]] = []
    for index in range(bench.sizes.repeats):
        rate, cpu = _replay(bench, count)
        replays.append((rate, raw.enqueue_rates[index]))
        replay_cpu.append((cpu, raw.enqueue_cpu[index]))
        bench.reset()
        rate, cpu = _retry(bench, count)
        retries.append((rate, raw.enqueue_rates[index]))
        retry_cpu.append((cpu, raw.enqueue_cpu[index]))
        bench.reset()
    return [
        Figure(
            "replay",
            "replay: events re-dispatched/s",
            "/s",
            *median_run(replays),
            "raw apply_async",
            runs=replays,
        ),
        Figure(
            "replay_cpu",
            "replay: CPU per event re-dispatched",
            "µs",
            *median_run(replay_cpu),
            "raw apply_async",
            higher_is_better=False,
            runs=replay_cpu,
        ),
        Figure(
            "dlq_retry",
            "DLQ retry: letters re-dispatched/s",
            "/s",
            *median_run(retries),
            "raw apply_async",
            runs=retries,
        ),
        Figure(
            "dlq_retry_cpu",
            "DLQ retry: CPU per letter re-dispatched",
            "µs",
            *median_run(retry_cpu),
            "raw apply_async",
            higher_is_better=False,
            runs=retry_cpu,
        ),
    ]
