"""Agents: deliveries/s through the agent loop, against the ideal ``concurrency / delay``.

The Procfile's worker runs the bench agent (one model call, no tools) through the
real SDK against the suite's Messages API, which answers after a fixed delay. The
events are stored first, then handed to the workers' dispatchers at once; the
clock runs from there to the last delivery recorded ``succeeded``.
"""

from __future__ import annotations

import time

from bench.context import Bench, wait_settled
from bench.figures import Figure, median_run
from bench.messages_api import MessagesAPI
from bench.scenarios.common import require, statuses, store_events

#: The issue's target: 0.9 of the ideal.
TARGET = 0.9
#: The agent of bench/agents.yaml.
AGENT = "BenchAgent"


def _run(bench: Bench, api: MessagesAPI, count: int) -> float:
    calls = api.calls
    ids = [event.id for event in store_events(bench, count, "agent")]
    started = time.perf_counter()
    bench.store.rpush(bench.plain_core.keys.dispatch, *ids)
    finished = wait_settled(bench, ids)
    counts = statuses(bench, ids, AGENT)
    require(counts == {"succeeded": count}, f"agent deliveries ended as {counts}")
    require(api.calls - calls == count, f"{api.calls - calls} model calls for {count} deliveries")
    return count / (finished - started)


def measure(bench: Bench, api: MessagesAPI) -> list[Figure]:
    concurrency = bench.stack.procfile.concurrency
    ideal = concurrency / api.delay
    count = concurrency * bench.sizes.agent_rounds
    # One round first: the worker imports the model SDK on its first agent delivery, and
    # each of its threads opens its connections (Redis, the API) on its first.
    _run(bench, api, concurrency)
    runs = [(_run(bench, api, count), ideal) for _ in range(bench.sizes.repeats)]
    bench.reset()
    ours, _ = median_run(runs)
    details = {"pool": bench.stack.procfile.pool, "concurrency": concurrency,
               "model_delay_s": api.delay, "deliveries": count}  # fmt: skip
    return [
        Figure("agents", "agents: deliveries/s", "/s", ours, ideal,
               f"ideal {concurrency}/{api.delay:g} s", target=f"≥ {TARGET}x",
               met=ours >= TARGET * ideal, runs=runs, details=details),
    ]  # fmt: skip
