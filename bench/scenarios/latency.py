"""End-to-end latency at a steady rate: the webhook's 202 to the handler starting.

Signed webhooks leave at a fixed rate (open loop) while the Procfile's web and
worker processes run; the handler notes when it starts. The rate is half raw
Celery's no-op tasks a second in the same run (:data:`bench.scenarios.raw.LATENCY_SHARE`),
so that it asks the same share of any machine. The baseline is raw Celery's
``apply_async`` returning to its task starting, at the same rate. The worker's
resident memory is read at the end, at steady state.
"""

from __future__ import annotations

import time
from typing import Any

from bench.context import Bench
from bench.figures import Figure, percentile
from bench.handlers import started_key
from bench.http_load import Target, run_open_loop
from bench.scenarios.common import require
from bench.scenarios.raw import LATENCY_SHARE, RawCelery
from bench.services import SOURCE, Process

#: The issue's target: p99 under 50 ms (it named 200 events/s).
TARGET_P99 = 0.050


def _started(bench: Bench, count: int) -> dict[str, str]:
    key = started_key(bench.settings.prefix)
    deadline = time.monotonic() + 60
    while bench.store.hlen(key) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    found: Any = bench.store.hgetall(key)
    return {str(k): str(v) for k, v in found.items()}


def measure(bench: Bench, raw: RawCelery, worker: Process, port: int) -> list[Figure]:
    """The latency rows, through the Procfile's web on ``port`` (started, and stopped, by
    the caller)."""
    sizes = bench.sizes
    rate = raw.latency_rate
    count = int(rate * sizes.latency_seconds)
    target = Target(port, SOURCE, bench.stack.secret, "stamp", sizes.payload_bytes)
    answers = run_open_loop(target, rate, count)
    require(set(answers.statuses) == {202}, f"webhooks answered {dict(answers.statuses)}")
    started = _started(bench, count)
    rss = worker.rss_bytes()
    bench.reset()
    ours = [float(started[e]) - answered for e, _, answered in answers.events if e in started]
    require(len(ours) == count, f"{len(ours)} of {count} handlers started")
    details = {
        "rate_per_s": rate,
        "rate_share_of_raw_celery": LATENCY_SHARE,
        "events": count,
        "send_behind_schedule_max_ms": round(answers.behind * 1000, 1),
        "webhook_p99_ms": round(percentile(answers.latencies, 0.99) * 1000, 2),
    }
    p99 = percentile(ours, 0.99)
    at = f"at {rate:,.0f}/s"
    return [
        Figure(
            "e2e_p50",
            f"e2e: 202 → handler start, p50 {at}",
            "ms",
            percentile(ours, 0.5),
            percentile(raw.latencies, 0.5),
            "raw Celery send→start",
            higher_is_better=False,
            details=details,
        ),
        Figure(
            "e2e_p99",
            f"e2e: 202 → handler start, p99 {at}",
            "ms",
            p99,
            percentile(raw.latencies, 0.99),
            "raw Celery send→start",
            higher_is_better=False,
            target="< 50 ms",
            met=p99 < TARGET_P99,
            details=details,
        ),
        Figure(
            "worker_rss",
            "worker RSS at steady state",
            "MiB",
            rss,
            raw.rss,
            "raw Celery worker",
            higher_is_better=False,
        ),
    ]
