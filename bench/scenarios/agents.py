"""Agents: deliveries/s through the agent loop, against the ideal ``concurrency / delay``.

The Procfile's worker runs the bench agent (one model call, no tools) through the
real SDK against the suite's Messages API, which answers after a fixed delay. The
events are stored first, then handed to the relay at once; the
clock runs from there to the last delivery recorded ``succeeded``. A second row
compares with the same number of SDK calls made straight from as many threads of
one process, with no Celery and no store: what this machine and the stand-in
allow at best.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from bench.context import Bench, wait_settled
from bench.figures import Figure, median_run
from bench.messages_api import MessagesAPI
from bench.scenarios.common import require, statuses, store_events

#: The issue's target: 0.9 of the ideal.
TARGET = 0.9
#: The agent of bench/agents.yaml.
AGENT = "BenchAgent"
#: The concurrency limit of the ``bench.capped`` route (bench/routes.yaml).
CAPPED = 16


def _run(bench: Bench, api: MessagesAPI, count: int, kind: str = "agent") -> float:
    calls = api.calls
    ids = [event.id for event in store_events(bench, count, kind)]
    started = time.perf_counter()
    bench.store.rpush(bench.plain_core.keys.dispatch, *ids)
    finished = wait_settled(bench, ids)
    counts = statuses(bench, ids, AGENT)
    require(counts == {"succeeded": count}, f"agent deliveries ended as {counts}")
    require(api.calls - calls == count, f"{api.calls - calls} model calls for {count} deliveries")
    return count / (finished - started)


def _capped(bench: Bench, api: MessagesAPI, count: int) -> Figure:
    """A burst to an agent whose route allows 16 at once: against 16 / the model's delay.

    The worker runs more threads than the limit: the rest of the burst waits parked, with
    no thread and no message, and is sent again as slots free.
    """
    burst = min(1000, max(count, 4 * CAPPED))
    rate = _run(bench, api, burst, "capped")
    bench.reset()
    ideal = CAPPED / api.delay
    return Figure(
        "agents_capped",
        f"agents: a burst under concurrency {CAPPED}",
        "/s",
        rate,
        ideal,
        f"ideal {CAPPED}/{api.delay:g} s",
        details={"deliveries": burst},
    )


def _raw_sdk(api: MessagesAPI, threads: int, rounds: int) -> float:
    """SDK calls per second from ``threads`` threads making ``rounds`` calls each."""
    import anthropic

    client = anthropic.Anthropic(base_url=api.url, api_key="bench", max_retries=0)

    message: list[Any] = [{"role": "user", "content": "Acknowledge."}]

    def calls(count: int) -> None:
        for _ in range(count):
            client.messages.create(model="claude-haiku-5-5", max_tokens=64, messages=message)

    def run(count: int) -> float:
        started = time.perf_counter()
        pool = [threading.Thread(target=calls, args=(count,)) for _ in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        return threads * count / (time.perf_counter() - started)

    run(1)  # each thread's connection opened, as the worker's warm-up round does
    return run(rounds)


def measure(bench: Bench, api: MessagesAPI) -> list[Figure]:
    concurrency = bench.stack.procfile.concurrency
    ideal = concurrency / api.delay
    count = concurrency * bench.sizes.agent_rounds
    # One round first: the worker imports the model SDK on its first agent delivery, and
    # each of its threads opens its connections (Redis, the API) on its first.
    _run(bench, api, concurrency)
    runs = [(_run(bench, api, count), ideal) for _ in range(bench.sizes.repeats)]
    bench.reset()
    raw = _raw_sdk(api, concurrency, bench.sizes.agent_rounds)
    ours, _ = median_run(runs)
    capped = _capped(bench, api, count)
    details = {"pool": bench.stack.procfile.pool, "concurrency": concurrency,
               "model_delay_s": api.delay, "deliveries": count}  # fmt: skip
    return [
        Figure("agents", "agents: deliveries/s", "/s", ours, ideal,
               f"ideal {concurrency}/{api.delay:g} s", target=f"≥ {TARGET}x",
               met=ours >= TARGET * ideal, runs=runs, details=details),
        Figure("agents_vs_sdk", "agents: the same, against the SDK called from threads", "/s",
               ours, raw, f"SDK alone, {concurrency} threads, no Celery"),
        capped,
    ]  # fmt: skip
