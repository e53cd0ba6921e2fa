"""Ingest: signed webhook POSTs/s answered 202 (stored), against a bare Flask endpoint.

A second row compares with an endpoint that does the least a durable one does:
one Redis write of the body (XADD) before it answers. A third compares the web
with traces on (exported over OTLP to the run's sink) against the same web with
them off; its metrics are counted either way. A fourth does the same with the
SDK's sampler keeping one trace in ten. The apps run under the Procfile's
gunicorn configuration, at the same time, and each repetition loads each in turn
so that drift hits them alike. No worker runs: this is the web tier alone.

The CPU rows count the gunicorn master and workers of each app over each load
(its warm-up too) per request answered; Redis's own CPU is in the details.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from bench.context import Bench
from bench.cost import Cost
from bench.figures import Figure, judged, median, median_run, percentile
from bench.http_load import Answers, LoadProcesses, Target
from bench.procfile import WEB_APP
from bench.scenarios.common import SAMPLED, require
from bench.services import SOURCE, Process, stop_all

#: The target: at least half the bare endpoint's requests per second.
TARGET = 0.5
#: At least 0.85 of the endpoint that only appends the body to a stream.
STORE_ONLY_TARGET = 0.85
#: Traces and metrics on cost at most a tenth of the requests per second.
OBSERVED_TARGET = 0.9


@dataclass
class Load:
    """What one app answered under the closed loop, how fast, and at what cost."""

    answers: Answers
    cost: Cost
    rate: float

    @property
    def cpu(self) -> float:
        """The app's CPU seconds per request answered."""
        return self.cost.cpu / self.answers.answered

    @property
    def redis_cpu(self) -> float:
        return self.cost.redis_cpu / self.answers.answered


def _load(bench: Bench, load: LoadProcesses, web: Process, port: int) -> Load:
    sizes = bench.sizes
    target = Target(port, SOURCE, bench.stack.secret, "noop", sizes.payload_bytes)
    meter = bench.meter(web)
    answers = load.closed_loop(
        target, sizes.load_connections, sizes.ingest_warmup, sizes.ingest_seconds
    )
    return Load(answers, meter.stop(), len(answers.latencies) / sizes.ingest_seconds)


def measure(bench: Bench) -> list[Figure]:
    with LoadProcesses(bench.sizes.load_processes) as load:
        return _measure(bench, load)


def _measure(bench: Bench, load: LoadProcesses) -> list[Figure]:
    started = bench.stack.webs(
        ("hello", "bench.hello:app", None),
        ("store-only", "bench.hello:stored", None),
        ("web", WEB_APP, None),
        ("web-observed", WEB_APP, bench.observed),
        ("web-sampled", WEB_APP, {**bench.observed, **SAMPLED}),
    )
    (hello, hello_port), (store_only, store_only_port) = started[:2]
    (web, web_port), (observed, observed_port), (sampled, sampled_port) = started[2:]
    rates: list[tuple[float, float]] = []
    traced: list[tuple[float, float]] = []
    traced_sampled: list[tuple[float, float]] = []
    against_store_only: list[tuple[float, float]] = []
    p50: list[tuple[float, float]] = []
    p99: list[tuple[float, float]] = []
    cpu: list[tuple[float, float]] = []
    cpu_store_only: list[tuple[float, float]] = []
    redis_cpu: list[float] = []
    busy = 0.0
    for _ in range(bench.sizes.repeats):
        flask = _load(bench, load, hello, hello_port)
        store = _load(bench, load, store_only, store_only_port)
        ours = _load(bench, load, web, web_port)
        require(
            set(ours.answers.statuses) == {202},
            f"webhooks answered {dict(ours.answers.statuses)}:\n{web.log()[-2000:]}",
        )
        seen = _load(bench, load, observed, observed_port)
        require(
            set(seen.answers.statuses) == {202},
            f"traced webhooks answered {dict(seen.answers.statuses)}",
        )
        some = _load(bench, load, sampled, sampled_port)
        require(
            set(some.answers.statuses) == {202},
            f"sampled webhooks answered {dict(some.answers.statuses)}",
        )
        traced.append((seen.rate, ours.rate))
        traced_sampled.append((some.rate, ours.rate))
        rates.append((ours.rate, flask.rate))
        against_store_only.append((ours.rate, store.rate))
        cpu.append((ours.cpu, flask.cpu))
        cpu_store_only.append((ours.cpu, store.cpu))
        redis_cpu.append(ours.redis_cpu)
        p50.append(
            (percentile(ours.answers.latencies, 0.5), percentile(flask.answers.latencies, 0.5))
        )
        p99.append(
            (percentile(ours.answers.latencies, 0.99), percentile(flask.answers.latencies, 0.99))
        )
        busy = max(busy, ours.answers.cpu_seconds, flask.answers.cpu_seconds)
    stop_all(hello, store_only, web, observed, sampled)
    stored = int(bench.store.xlen(bench.plain_core.keys.stream))
    bench.reset()
    ours_rate, flask_rate = median_run(rates)
    elapsed = bench.sizes.ingest_warmup + bench.sizes.ingest_seconds
    details = {
        "stored": stored,
        "load_cpu_share": round(busy / elapsed / (os.cpu_count() or 1), 3),
        "load": f"{bench.sizes.load_processes} processes x "
        f"{bench.sizes.load_connections} keep-alive connections",
    }
    return [
        Figure(
            "ingest",
            "ingest: webhooks 202/s",
            "req/s",
            ours_rate,
            flask_rate,
            "bare Flask",
            runs=rates,
            **judged(rates, TARGET),
            details=details,
        ),
        Figure(
            "ingest_vs_store_only",
            "ingest: the same, against one XADD per request",
            "req/s",
            *median_run(against_store_only),
            "Flask storing the body, no checks",
            runs=against_store_only,
            **judged(against_store_only, STORE_ONLY_TARGET),
        ),
        Figure(
            "ingest_cpu",
            "ingest: CPU per request (gunicorn master + workers)",
            "µs",
            *median_run(cpu),
            "bare Flask",
            higher_is_better=False,
            runs=cpu,
            details={"redis_cpu_us": round(median(redis_cpu) * 1e6, 1)},
        ),
        Figure(
            "ingest_cpu_vs_store_only",
            "ingest: CPU per request, against one XADD",
            "µs",
            *median_run(cpu_store_only),
            "Flask storing the body, no checks",
            higher_is_better=False,
            runs=cpu_store_only,
        ),
        Figure(
            "ingest_observed",
            "ingest: traces on, against off",
            "req/s",
            *median_run(traced),
            "the same web, traces off",
            runs=traced,
            **judged(traced, OBSERVED_TARGET),
        ),
        Figure(
            "ingest_sampled",
            "ingest: traces on, one in ten sampled, against off",
            "req/s",
            *median_run(traced_sampled),
            "the same web, traces off",
            runs=traced_sampled,
            details=SAMPLED,
            **judged(traced_sampled, OBSERVED_TARGET),
        ),
        Figure(
            "ingest_p50",
            "ingest: p50 latency",
            "ms",
            *median_run(p50),
            "bare Flask",
            higher_is_better=False,
            runs=p50,
        ),
        Figure(
            "ingest_p99",
            "ingest: p99 latency",
            "ms",
            *median_run(p99),
            "bare Flask",
            higher_is_better=False,
            runs=p99,
        ),
    ]
