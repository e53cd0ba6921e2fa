"""How much each mode measures: the full suite, ``--quick`` and the CI ``--smoke``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sizes:
    """Counts and durations of one mode; ``repeats`` runs of each throughput, median kept."""

    repeats: int
    #: Closed-loop ingest: seconds not counted, then seconds counted, per repetition.
    ingest_warmup: float
    ingest_seconds: float
    load_processes: int
    load_connections: int
    #: Events per dispatch repetition (no-op handler), and per replay/retry repetition.
    dispatch_events: int
    replay_events: int
    #: Agent deliveries per repetition, in multiples of the worker's concurrency. A burst's
    #: first rounds start together and contend for the GIL; later ones spread out, so a
    #: longer burst measures the throughput a busy worker keeps up.
    agent_rounds: int
    #: End-to-end latency: seconds at its rate (half raw Celery's, see scenarios/latency.py).
    latency_seconds: float
    #: The Messages API's fixed answer time, in seconds.
    model_delay: float = 0.5
    #: Calls of one own tool timed in process, and as its script (a new interpreter each).
    tool_call_samples: int = 5
    payload_bytes: int = 1024


MODES: dict[str, Sizes] = {
    "full": Sizes(
        repeats=3,
        ingest_warmup=1.0,
        ingest_seconds=8.0,
        load_processes=2,
        load_connections=8,
        dispatch_events=4000,
        replay_events=3000,
        agent_rounds=16,
        latency_seconds=15,
    ),
    "quick": Sizes(
        repeats=1,
        ingest_warmup=1.0,
        ingest_seconds=4.0,
        load_processes=2,
        load_connections=8,
        dispatch_events=2000,
        replay_events=1000,
        agent_rounds=4,
        latency_seconds=4,
    ),
    "smoke": Sizes(
        repeats=1,
        ingest_warmup=0.3,
        ingest_seconds=1.0,
        load_processes=2,
        load_connections=4,
        dispatch_events=200,
        replay_events=100,
        agent_rounds=1,
        latency_seconds=1,
        model_delay=0.1,
        tool_call_samples=2,
    ),
}
